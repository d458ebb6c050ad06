// The dashboard, live: run status changes arrive over /ui/ws/runs and update the
// lists in place (no reload), with the "N running, N queued" summary above them, and so
// do the reasons queued runs wait for (every push carries them all: a claim or an agent
// going offline changes others' reasons too).
// Everything from the server goes in through textContent.
"use strict";
(function () {
  const FINISHED = new Set(["success", "failure", "warning", "cancelled", "skipped", "error"]);
  const messages = document.getElementById("messages");
  const counts = document.getElementById("run-counts");
  const active = document.getElementById("active-runs");
  const queued = document.getElementById("queued-runs");
  const table = document.querySelector("table[data-live-runs] tbody");

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }
  function badge(status) {
    const node = el("span", "status status-" + status, status);
    node.dataset.status = "";
    return node;
  }
  function runLink(run) {
    const link = el("a", "", `${run.project} #${run.number}`);
    link.href = "/ui/runs/" + encodeURIComponent(run.id);
    return link;
  }
  function duration(seconds) {
    if (seconds === null || seconds === undefined) return "";
    if (seconds < 60) return seconds < 10 ? seconds.toFixed(1) + "s" : Math.floor(seconds) + "s";
    const m = Math.floor(seconds / 60), s = Math.floor(seconds % 60);
    return m < 60 ? `${m}m ${String(s).padStart(2, "0")}s` : `${Math.floor(m / 60)}h ${String(m % 60).padStart(2, "0")}m`;
  }
  function initials(author) {
    const parts = (author || "").split("<")[0].replace(/\./g, " ").trim().split(/\s+/).filter(Boolean);
    if (!parts.length) return "?";
    return (parts[0][0] + (parts.length > 1 ? parts[parts.length - 1][0] : "")).toUpperCase();
  }

  function setEmpty(list) {
    const items = list.querySelectorAll("li[data-run-id]");
    let empty = list.querySelector("li.empty");
    if (items.length && empty) empty.remove();
    if (!items.length && !empty) { empty = el("li", "empty", list.dataset.empty); list.appendChild(empty); }
  }

  // As the server writes times on the page (the `moment` filter), so rows match.
  function moment(iso) {
    if (!iso) return "";
    const when = new Date(iso);
    if (Number.isNaN(when.getTime())) return "";
    return when.toISOString().slice(0, 19).replace("T", " ") + " UTC";
  }

  function taskItem(run) {
    const item = el("li");
    item.dataset.runId = run.id;
    item.append(badge(run.status), " ", runLink(run));
    const ref = run.tag ? "tag " + run.tag : run.branch;
    if (ref) item.append(" ", el("span", "ref", ref));
    if (run.status === "running" && run.started_at) item.append(" ", el("span", "muted", "since " + moment(run.started_at)));
    if (run.status === "queued") item.append(" ", el("span", "muted", "queued since " + moment(run.created_at)));
    return item;
  }

  function setReason(item, reason) {
    let node = item.querySelector(".waiting-reason");
    if (!reason) {
      if (node) node.remove();
      return;
    }
    if (!node) {
      node = el("span", "waiting-reason muted");
      item.append(" ", node);
    }
    node.textContent = `(${reason})`;
  }

  function applyWaiting(waiting) {
    if (!waiting) return;
    queued.querySelectorAll("li[data-run-id]").forEach((item) => setReason(item, waiting[item.dataset.runId]));
  }

  function tableRow(run) {
    const row = el("tr");
    row.dataset.runId = run.id;
    const cells = [];
    const statusCell = el("td"); statusCell.appendChild(badge(run.status)); cells.push(statusCell);
    const projectCell = el("td");
    const projectLink = el("a", "", run.project);
    projectLink.href = "/ui/projects/" + encodeURIComponent(run.project);
    projectCell.appendChild(projectLink); cells.push(projectCell);
    const numberCell = el("td");
    const numberLink = el("a", "", "#" + run.number);
    numberLink.href = "/ui/runs/" + encodeURIComponent(run.id);
    numberCell.appendChild(numberLink); cells.push(numberCell);
    const refCell = el("td");
    const ref = run.tag ? "tag " + run.tag : run.branch;
    if (ref) refCell.appendChild(el("span", "ref", ref));
    cells.push(refCell);
    const commitCell = el("td", "commit");
    commitCell.append(el("code", "", run.commit_sha.slice(0, 8)), " ",
      el("span", "message", (run.commit_message || "").split("\n")[0]));
    cells.push(commitCell);
    const authorCell = el("td");
    const avatar = el("span", "avatar", initials(run.commit_author));
    avatar.title = (run.commit_author || "").split("<")[0].trim();
    avatar.setAttribute("aria-hidden", "true");
    authorCell.append(avatar, el("span", "sr", avatar.title)); cells.push(authorCell);
    cells.push(el("td", "", run.event + (run.created_by ? " · " + run.created_by : "")));
    const durationCell = el("td", "", duration(run.duration_seconds));
    durationCell.dataset.duration = "";
    cells.push(durationCell);
    row.append(...cells);
    return row;
  }

  function update(run) {
    document.querySelectorAll(`[data-run-id="${CSS.escape(String(run.id))}"] [data-status]`).forEach((node) => {
      node.textContent = run.status;
      node.className = "status status-" + run.status;
    });
    // Active and queued lists: the run moves to the list of its status, or leaves both.
    [active, queued].forEach((list) => {
      const item = list.querySelector(`li[data-run-id="${CSS.escape(String(run.id))}"]`);
      if (item) item.remove();
    });
    if (run.status === "running") active.appendChild(taskItem(run));
    if (run.status === "queued") {
      const item = taskItem(run);
      setReason(item, run.waiting_reason);
      queued.appendChild(item);
    }
    setEmpty(active); setEmpty(queued);
    count();
    if (table) {
      const existing = table.querySelector(`tr[data-run-id="${CSS.escape(String(run.id))}"]`);
      const row = tableRow(run);
      if (existing) existing.replaceWith(row);
      else { table.prepend(row); const empty = table.querySelector("tr.empty"); if (empty) empty.remove(); }
    }
    const note = el("li", "", `${run.project} #${run.number}: ${run.status}`);
    counts.after(note);  // the newest note just below the summary
    while (messages.children.length > 8) messages.lastElementChild.remove();
  }

  // The summary counts what the lists hold, so it can never disagree with them.
  function count() {
    const running = String(active.querySelectorAll("li[data-run-id]").length);
    const waiting = String(queued.querySelectorAll("li[data-run-id]").length);
    const runningNode = counts.querySelector('[data-count="running"]');
    const queuedNode = counts.querySelector('[data-count="queued"]');
    if (runningNode.textContent !== running) runningNode.textContent = running;
    if (queuedNode.textContent !== waiting) queuedNode.textContent = waiting;
  }

  function connect(delay) {
    const socket = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ui/ws/runs?waiting=1");
    socket.addEventListener("message", (event) => {
      const message = JSON.parse(event.data);
      if (message.type === "run") { update(message.run); applyWaiting(message.waiting); }
      else if (message.type === "waiting") applyWaiting(message.waiting);
      else if (message.type === "resync") location.reload();
    });
    socket.addEventListener("close", (event) => {
      if (event.code === 4401) return;
      setTimeout(() => connect(Math.min(delay * 2, 30000)), delay);
    });
    document.body.dataset.live = "connecting";
    socket.addEventListener("open", () => { document.body.dataset.live = "open"; });
  }
  connect(1000);
})();
