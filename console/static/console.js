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
