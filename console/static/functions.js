// lambdadb console: the function page's charts (uPlot, from the series
// JSON, refreshed every few seconds) and its live log tail (EventSource).
"use strict";
(function () {
  var CHARTS = [
    { title: "Invocations, errors and throttles per interval", lines: [
      ["invocations", "invocations", "#2457c5"], ["errors", "errors", "#b42318"], ["throttles", "throttles (429)", "#a15c00"]] },
    { title: "Duration (ms)", lines: [["p50_ms", "p50", "#2457c5"], ["p99_ms", "p99", "#7a3fb8"]] },
    { title: "Starts by kind per interval", lines: [
      ["start_warm", "warm", "#17803d"], ["start_restart", "restart", "#a15c00"], ["start_cold", "cold", "#b42318"]] },
    { title: "Sandboxes by state", lines: [
      ["sandboxes_running", "running", "#2457c5"], ["sandboxes_paused", "paused", "#17803d"],
      ["sandboxes_stopped", "stopped", "#5b6670"], ["sandboxes_cold", "cold", "#b42318"]] },
    { title: "Billed ms and KV calls per interval", lines: [
      ["billed_ms", "billed ms", "#2457c5"], ["kv_calls", "KV calls", "#7a3fb8"]] }
  ];
  // The charts are fetched again every sampling interval, within these.
  var MIN_REFRESH_MS = 2000, MAX_REFRESH_MS = 10000;

  function chartWidth(box) { return Math.max(300, box.clientWidth - 8); }

  function startCharts(root) {
    var url = root.getAttribute("data-series");
    var status = document.getElementById("charts-status");
    var plots = [];
    function build(data) {
      CHARTS.forEach(function (c, i) {
        var box = document.createElement("div");
        box.className = "chart";
        box.id = "chart-" + i;
        var h = document.createElement("h3");
        h.textContent = c.title;
        box.appendChild(h);
        root.appendChild(box);
        var series = [{}];
        c.lines.forEach(function (l) {
          series.push({ label: l[1], stroke: l[2], width: 1.5, spanGaps: false, points: { show: false } });
        });
        var opts = { width: chartWidth(box), height: 180, series: series,
          scales: { x: { time: true } }, axes: [{}, { size: 50 }], legend: { live: true } };
        plots.push({ plot: new uPlot(opts, columns(data, c), box), chart: c, box: box });
      });
    }
    function columns(data, c) {
      var cols = [data.t];
      c.lines.forEach(function (l) { cols.push(data.lines[l[0]] || []); });
      return cols;
    }
    function refresh() {
      fetch(url, { credentials: "same-origin", headers: { "Accept": "application/json" } })
        .then(function (r) {
          if (!r.ok) { throw new Error("HTTP " + r.status); }
          return r.json();
        })
        .then(function (data) {
          if (plots.length === 0) { build(data); } else {
            plots.forEach(function (p) { p.plot.setData(columns(data, p.chart)); });
          }
          var samples = (data.lines.invocations || []).filter(function (v) { return v !== null; }).length;
          root.setAttribute("data-samples", String(samples));
          root.classList.remove("stale");
          if (status) {
            status.textContent = samples + " samples, one every " + data.interval_s + " s, merged over the nodes";
          }
          every = Math.min(Math.max(data.interval_s * 1000, MIN_REFRESH_MS), MAX_REFRESH_MS);
        })
        .catch(function (e) {
          root.classList.add("stale");
          if (status) { status.textContent = "could not load the series (" + e.message + "); retrying"; }
        })
        .then(function () { setTimeout(refresh, every); });
    }
    var every = MIN_REFRESH_MS;
    refresh();
    window.addEventListener("resize", function () {
      plots.forEach(function (p) { p.plot.setSize({ width: chartWidth(p.box), height: 180 }); });
    });
  }

  var MAX_LINES = 1000;

  function startTail(list) {
    var status = document.getElementById("log-status");
    var es = new EventSource(list.getAttribute("data-stream"));
    function say(s) { if (status) { status.textContent = s; } }
    es.addEventListener("open", function () { say("live"); });
    es.addEventListener("error", function () { say("reconnecting…"); });
    es.addEventListener("reset", function () {
      while (list.firstChild) { list.removeChild(list.firstChild); }
    });
    es.addEventListener("line", function (e) {
      var l;
      try { l = JSON.parse(e.data); } catch (err) { return; }
      var atBottom = list.scrollTop + list.clientHeight >= list.scrollHeight - 4;
      var li = document.createElement("li");
      var when = document.createElement("span");
      when.className = "when";
      when.textContent = String(l.time).replace("T", " ").replace(/\.\d+Z$/, "Z");
      var node = document.createElement("span");
      node.className = "node";
      node.textContent = l.node;
      li.appendChild(when);
      li.appendChild(node);
      li.appendChild(document.createTextNode(l.line));
      list.appendChild(li);
      while (list.childElementCount > MAX_LINES) { list.removeChild(list.firstElementChild); }
      if (atBottom) { list.scrollTop = list.scrollHeight; }
    });
    es.addEventListener("problem", function (e) {
      var msg = e.data;
      try { msg = JSON.parse(e.data); } catch (err) { /* as sent */ }
      say("some nodes did not answer: " + msg);
    });
    window.addEventListener("pagehide", function () { es.close(); });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var charts = document.getElementById("charts");
    if (charts && typeof uPlot === "function") { startCharts(charts); }
    var tail = document.getElementById("log-tail");
    if (tail && typeof EventSource === "function") { startTail(tail); }
  });
})();
