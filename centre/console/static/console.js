// The console's only script: swap in the live section the server re-renders (SSE /events).
// Nothing is built here: the HTML comes escaped from the centre (centre/console/pages.py).
(function () {
  "use strict";
  var live = document.getElementById("live");
  var conn = document.getElementById("conn");
  if (!window.EventSource || !live) {
    return;
  }
  var source = new EventSource("/events");
  source.addEventListener("state", function (event) {
    live.innerHTML = event.data;
    conn.textContent = "live";
    conn.className = "up";
  });
  source.addEventListener("expired", function () {
    source.close();
    window.location.assign("/login");
  });
  source.onerror = function () {
    conn.textContent = "reconnecting…";
    conn.className = "down";
  };
})();
