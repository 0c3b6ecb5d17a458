// The console's only script: pages that follow something running (a pending job, a backfill,
// the overview) ask to be reloaded every few seconds, unless the reader is typing in a form.
(function () {
  "use strict";
  var seconds = Number(document.body.dataset.refresh || 0);
  if (!seconds) {
    return;
  }
  window.setInterval(function () {
    var active = document.activeElement;
    if (active && (active.tagName === "INPUT" || active.tagName === "SELECT")) {
      return;
    }
    window.location.reload();
  }, seconds * 1000);
})();
