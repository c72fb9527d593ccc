// lambdadb console: behaviour that must not be inline (the pages' CSP
// allows only scripts served by the node).
"use strict";
// A polled fragment that fails (node restarting) keeps the last view and
// says so, instead of swapping in an error page.
document.addEventListener("htmx:responseError", function (e) {
  var t = e.detail.target;
  if (t) { t.classList.add("stale"); }
});
document.addEventListener("htmx:afterSwap", function (e) {
  var t = e.detail.target;
  if (t) { t.classList.remove("stale"); }
});
// A live region is not swapped while the keyboard focus is inside it (a
// button of the triggers page): the swap would take the focus away.
document.addEventListener("htmx:beforeRequest", function (e) {
  var t = e.detail.elt;
  var a = document.activeElement;
  if (t && t.classList && t.classList.contains("live") && a && a !== document.body && t.contains(a)) {
    e.preventDefault();
  }
});
