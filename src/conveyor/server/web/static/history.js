// The run page's History: times in the reader's own locale and zone, and the list
// read again (GET /api/v1/runs/{id}/events) whenever the run's status changes, which
// log.js writes to #run's data-status. Everything from the server goes in as text.
"use strict";
(function () {
  const list = document.getElementById("run-history");
  const runBox = document.getElementById("run");
  if (!list) return;
  const FORMAT = { dateStyle: "medium", timeStyle: "medium" };

  function localize(node) {
    const moment = new Date(node.getAttribute("datetime"));
    if (Number.isNaN(moment.getTime())) return;
    node.textContent = moment.toLocaleString(undefined, FORMAT);
    node.title = moment.toISOString();
  }

  function span(className, text) {
    const node = document.createElement("span");
    node.className = className;
    node.textContent = text;
    return node;
  }

  function line(event) {
    const item = document.createElement("li");
    item.dataset.action = event.action;
    const time = document.createElement("time");
    time.setAttribute("datetime", event.time);
    localize(time);
    item.append(time, " ", span("history-actor", event.actor), " ",
      span("history-action", event.action), " ", span("history-details", event.details));
    return item;
  }

  // One read at a time; a change seen during a read asks for one more after it.
  let reading = false;
  let again = false;
  async function reread() {
    if (reading) { again = true; return; }
    reading = true;
    do {
      again = false;
      try {
        const answer = await fetch(list.dataset.eventsUrl, { headers: { Accept: "application/json" } });
        if (answer.ok) {
          const events = await answer.json();
          list.replaceChildren(...events.map(line));
          list.dataset.updated = String(Date.now());
        }
      } catch (_) {
        // A failed read leaves the list as it was; the next status change tries again.
      }
    } while (again);
    reading = false;
  }

  list.querySelectorAll("time[datetime]").forEach(localize);
  if (runBox) {
    new MutationObserver(() => reread()).observe(runBox, { attributes: true, attributeFilter: ["data-status"] });
  }
})();
