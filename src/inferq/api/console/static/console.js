// inferq console: live parts of pages, and confirmations. No dependencies.
//
// An element with data-live="URL" is refreshed every data-interval milliseconds with
// what URL answers to the header X-Console-Live: 1 (the page's live part, rendered by
// the server). A refresh stops once the part holds an element with data-final (the
// batch or job ended), waits while the tab is hidden, and skips a turn while a control
// inside it has the focus. A 401 means the session ended: back to the login page.
"use strict";

(function () {
  function refresh(el) {
    var url = el.getAttribute("data-live");
    var interval = parseInt(el.getAttribute("data-interval") || "2000", 10);
    function again() {
      window.setTimeout(tick, interval);
    }
    function tick() {
      if (el.querySelector("[data-final]")) {
        return;
      }
      if (document.hidden || el.contains(document.activeElement)) {
        again();
        return;
      }
      fetch(url, {
        headers: { "X-Console-Live": "1" },
        credentials: "same-origin",
        cache: "no-store",
      })
        .then(function (response) {
          if (response.status === 401) {
            window.location.assign("/console/login?next=" +
              encodeURIComponent(window.location.pathname + window.location.search));
            return null;
          }
          return response.ok ? response.text() : null;
        })
        .then(function (html) {
          if (html !== null && !el.contains(document.activeElement)) {
            el.innerHTML = html;
            el.setAttribute("data-updated", String(Date.now()));
          }
          again();
        })
        .catch(again);
    }
    again();
  }

  function confirmSubmit(event) {
    var form = event.target;
    var question = form.getAttribute && form.getAttribute("data-confirm");
    if (question && !window.confirm(question)) {
      event.preventDefault();
    }
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-live]").forEach(refresh);
  });
  document.addEventListener("submit", confirmSubmit);
})();
