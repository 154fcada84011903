// htmx drops 4xx/5xx responses by default, so a boosted form that fails validation would seem to do nothing.
// Our error responses are written to be shown: full pages for boosted requests, and fragments that the server
// retargets (HX-Retarget) for other htmx requests. Swap exactly those; anything else that fails (a proxy's 502
// page arriving at a polling fragment, say) is still left alone.
document.addEventListener("htmx:beforeSwap", function (event) {
  var xhr = event.detail.xhr;
  if (xhr.status >= 400 && (event.detail.boosted || xhr.getResponseHeader("HX-Retarget"))) {
    event.detail.shouldSwap = true;
    event.detail.isError = false;
  }
});

// A filter box inside another form (the new group's instrument picker) narrows a list as you type; Enter there
// must not submit the surrounding form.
document.addEventListener("keydown", function (event) {
  var target = event.target;
  if (event.key === "Enter" && target instanceof Element && target.matches("input[data-filter]")) {
    event.preventDefault();
  }
});
