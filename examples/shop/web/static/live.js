// The live orders page: one row per order, newest first, from the shop's
// WebSocket (which relays the lambdadb change feed of orders/).
(function () {
  "use strict";
  var body = document.getElementById("orders");
  var status = document.getElementById("status");
  var max = 50;

  function cell(tr, text, cls) {
    var td = document.createElement("td");
    td.textContent = text;
    if (cls) td.className = cls;
    tr.appendChild(td);
  }

  function add(o) {
    var tr = document.createElement("tr");
    tr.className = "new";
    cell(tr, (o.placed || "").replace("T", " ").replace(/\.\d+Z$/, "Z"));
    var td = document.createElement("td");
    var a = document.createElement("a");
    a.href = "/customers/" + encodeURIComponent(o.customer);
    a.textContent = o.customer;
    td.appendChild(a);
    tr.appendChild(td);
    cell(tr, o.region);
    cell(tr, o.product);
    cell(tr, String(o.qty), "num");
    cell(tr, Number(o.amount).toFixed(2), "num");
    cell(tr, String(o.shard), "num");
    body.insertBefore(tr, body.firstChild);
    while (body.children.length > max) body.removeChild(body.lastChild);
    setTimeout(function () { tr.className = ""; }, 1500);
  }

  function connect() {
    var ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/live/ws");
    ws.onopen = function () { status.textContent = "following"; status.className = "status on"; };
    ws.onmessage = function (ev) {
      try { add(JSON.parse(ev.data)); } catch (e) { /* not an order */ }
    };
    ws.onclose = function () {
      status.textContent = "reconnecting…";
      status.className = "status";
      setTimeout(connect, 1000);
    };
  }
  connect();
})();
