// The run page: a virtual-scrolling log viewer per step (it fetches line ranges as they
// come into view and never holds the whole log), live lines over WebSocket, search on
// the server, go-to-line, follow mode, each line's time on demand; live run status.
"use strict";
(function () {
  const LINE_HEIGHT = 18;          // px; matches .log-row in conveyor.css
  const CHUNK = 1000;              // lines per range request
  const MAX_SCROLL_PX = 10000000;  // browsers cap element heights; scale beyond this
  const MAX_CACHED_CHUNKS = 60;
  const FINISHED = new Set(["success", "failure", "warning", "cancelled", "skipped", "error"]);
  const runBox = document.getElementById("run");
  const runId = runBox ? runBox.dataset.runId : null;
  const wsBase = (location.protocol === "https:" ? "wss://" : "ws://") + location.host;
  const TIMESTAMPS_KEY = "conveyor.log.timestamps";

  // One choice for every log on every page, kept across visits. Storage may be off
  // (private windows, policies): then the toggle still works for this page.
  let showTimes = false;
  try { showTimes = localStorage.getItem(TIMESTAMPS_KEY) === "on"; } catch (error) { /* no storage */ }

  function setShowTimes(on) {
    showTimes = on;
    try { localStorage.setItem(TIMESTAMPS_KEY, on ? "on" : "off"); } catch (error) { /* no storage */ }
    viewers.forEach((viewer) => {
      if (!viewer.built) return;
      viewer.timestamps.checked = on;
      viewer.draw();
    });
  }

  const two = (n) => String(n).padStart(2, "0");

  /** A line's time (ms since the epoch) as a cell: HH:MM:SS local, the full ISO time as its title. */
  function timeCell(ms) {
    const cell = document.createElement("span");
    cell.className = "lts";
    // The stylesheet is another part's; the page's policy allows styles set from script.
    cell.style.flex = "0 0 auto";
    cell.style.minWidth = "8ch";
    cell.style.paddingRight = "10px";
    cell.style.color = "var(--log-number)";
    cell.style.userSelect = "none";
    if (typeof ms === "number") {
      const when = new Date(ms);
      cell.textContent = `${two(when.getHours())}:${two(when.getMinutes())}:${two(when.getSeconds())}`;
      cell.title = when.toISOString();
    }
    return cell;
  }

  function setStatus(holder, status) {
    const badge = holder && holder.querySelector("[data-status]");
    if (!badge) return;
    badge.textContent = status;
    badge.className = "status status-" + status;
  }

  class Viewer {
    constructor(details) {
      this.details = details;
      this.stepId = details.dataset.stepId;
      this.total = parseInt(details.dataset.lines, 10) || 0;
      this.chunks = new Map();     // chunk index -> array of lines
      this.times = new Map();      // chunk index -> array of line times (ms since the epoch)
      this.loading = new Set();
      this.attempt = 0;            // restarts seen: a range asked before one is dropped
      this.highlight = 0;
      this.matches = [];
      this.matchAt = -1;
      this.built = false;
    }

    build() {
      if (this.built) return;
      this.built = true;
      const host = this.details.querySelector(".log");
      const tools = this.details.querySelector(".log-tools");
      const id = "s" + parseInt(this.stepId, 10);
      tools.insertAdjacentHTML("beforeend",
        `<form class="log-search" role="search"><label for="${id}-q">Search</label>` +
        `<input id="${id}-q" type="search" size="14"><button type="submit" class="secondary">Find</button>` +
        `<button type="button" class="secondary" data-prev aria-label="Previous match">↑</button>` +
        `<button type="button" class="secondary" data-next aria-label="Next match">↓</button>` +
        `<span class="muted" data-found aria-live="polite"></span></form>` +
        `<form class="log-goto"><label for="${id}-go">Line</label><input id="${id}-go" type="number" min="1" size="8">` +
        `<button type="submit" class="secondary">Go</button></form>` +
        `<label class="check"><input type="checkbox" data-follow> Follow</label>` +
        `<label class="check"><input type="checkbox" data-timestamps> Timestamps</label>`);
      this.scroller = document.createElement("div");
      this.scroller.className = "log-scroll";
      this.scroller.tabIndex = 0;
      this.scroller.setAttribute("aria-label", "Log of step " + this.stepId);
      this.spacer = document.createElement("div");
      this.spacer.className = "log-spacer";
      this.rows = document.createElement("div");
      this.rows.className = "log-rows";
      this.spacer.appendChild(this.rows);
      this.scroller.appendChild(this.spacer);
      host.appendChild(this.scroller);
      this.follow = tools.querySelector("[data-follow]");
      this.follow.checked = this.details.dataset.status === "running";
      this.found = tools.querySelector("[data-found]");
      this.timestamps = tools.querySelector("[data-timestamps]");
      this.timestamps.checked = showTimes;
      this.timestamps.addEventListener("change", () => setShowTimes(this.timestamps.checked));
      this.scroller.addEventListener("scroll", () => this.draw());
      window.addEventListener("resize", () => this.draw());
      tools.querySelector(".log-goto").addEventListener("submit", (event) => {
        event.preventDefault();
        const n = parseInt(tools.querySelector(".log-goto input").value, 10);
        if (n > 0) this.jump(n, true);
      });
      tools.querySelector(".log-search").addEventListener("submit", (event) => {
        event.preventDefault();
        this.search(tools.querySelector(".log-search input").value);
      });
      tools.querySelector("[data-next]").addEventListener("click", () => this.step(1));
      tools.querySelector("[data-prev]").addEventListener("click", () => this.step(-1));
      this.resize();
    }

    get height() { return Math.min(this.total * LINE_HEIGHT, MAX_SCROLL_PX); }
    get scaled() { return this.total * LINE_HEIGHT > MAX_SCROLL_PX; }
    get visible() { return Math.ceil(this.scroller.clientHeight / LINE_HEIGHT) + 1; }

    resize() {
      this.spacer.style.height = Math.max(this.height, LINE_HEIGHT) + "px";
      this.scroller.style.height = Math.min(Math.max(this.total, 1) * LINE_HEIGHT + 2, window.innerHeight * 0.7) + "px";
      this.draw();
    }

    firstLine() {
      const top = this.scroller.scrollTop;
      if (!this.scaled) return Math.floor(top / LINE_HEIGHT);
      const range = this.height - this.scroller.clientHeight;
      return Math.round((range > 0 ? top / range : 0) * Math.max(0, this.total - this.visible));
    }

    /** Scroll so that line `n` (1-based) shows, a third of the way down. */
    jump(n, mark) {
      n = Math.min(Math.max(1, n), Math.max(1, this.total));
      const target = Math.max(0, n - 1 - Math.floor(this.visible / 3));
      if (!this.scaled) this.scroller.scrollTop = target * LINE_HEIGHT;
      else {
        const range = this.height - this.scroller.clientHeight;
        this.scroller.scrollTop = (target / Math.max(1, this.total - this.visible)) * range;
      }
      if (mark) this.highlight = n;
      this.draw();
    }

    line(n) {  // 0-based
      const chunk = this.chunks.get(Math.floor(n / CHUNK));
      return chunk ? chunk[n % CHUNK] : undefined;
    }

    time(n) {  // 0-based; undefined when not known (yet)
      const chunk = this.times.get(Math.floor(n / CHUNK));
      return chunk ? chunk[n % CHUNK] : undefined;
    }

    draw() {
      if (!this.built) return;
      const first = this.firstLine();
      const count = Math.min(this.visible, Math.max(0, this.total - first));
      const top = this.scaled ? this.scroller.scrollTop : first * LINE_HEIGHT;
      this.rows.style.transform = `translateY(${top}px)`;
      const fragment = document.createDocumentFragment();
      const missing = new Set();
      for (let i = first; i < first + count; i++) {
        const row = document.createElement("div");
        row.className = "log-row" + (i + 1 === this.highlight ? " marked" : "");
        const number = document.createElement("a");
        number.className = "ln";
        number.href = `#s${this.stepId}L${i + 1}`;
        number.textContent = String(i + 1);
        const text = document.createElement("span");
        text.className = "lt";
        const value = this.line(i);
        if (value === undefined) { missing.add(Math.floor(i / CHUNK)); text.classList.add("pending"); }
        else window.ConveyorAnsi.render(value, text);
        if (showTimes) row.append(number, timeCell(this.time(i)), text);
        else row.append(number, text);
        fragment.appendChild(row);
      }
      this.rows.replaceChildren(fragment);
      missing.forEach((chunk) => this.fetch(chunk));
    }

    async fetch(chunk) {
      if (this.loading.has(chunk)) return;
      this.loading.add(chunk);
      const attempt = this.attempt;
      try {
        const start = chunk * CHUNK;
        const reply = await fetch(`/api/v1/steps/${this.stepId}/log?start=${start}&end=${start + CHUNK}`,
          { credentials: "same-origin" });
        if (!reply.ok) return;
        const body = await reply.json();
        if (attempt !== this.attempt) return;  // asked before the log began again
        const known = this.chunks.get(chunk) || [];
        const fresher = body.lines.length >= known.length;
        this.chunks.set(chunk, (fresher ? body.lines : known).slice());
        this.times.set(chunk, (fresher ? body.times || [] : this.times.get(chunk) || []).slice());
        if (this.chunks.size > MAX_CACHED_CHUNKS) {
          const here = Math.floor(this.firstLine() / CHUNK);
          const far = [...this.chunks.keys()].sort((a, b) => Math.abs(b - here) - Math.abs(a - here));
          far.slice(0, this.chunks.size - MAX_CACHED_CHUNKS).forEach((key) => {
            this.chunks.delete(key);
            this.times.delete(key);
          });
        }
        if (body.total > this.total) { this.total = body.total; this.counted(); }
        this.draw();
      } finally {
        this.loading.delete(chunk);
      }
    }

    counted() {
      const label = this.details.querySelector("[data-line-count]");
      if (label) label.textContent = String(this.total);
      if (this.built) this.resize();
    }

    /** The step's log begins again (its job went back to the queue): no line is kept. */
    restart() {
      this.attempt += 1;
      this.chunks.clear();
      this.times.clear();
      this.loading.clear();
      this.matches = [];
      this.matchAt = -1;
      this.total = 0;
      this.counted();
      if (this.built) this.draw();
    }

    /** Lines that arrived live, `start` 0-based, with their times (if the server sent them). */
    add(start, lines, times) {
      for (let k = 0; k < lines.length; k++) {
        const n = start + k, index = Math.floor(n / CHUNK);
        let chunk = this.chunks.get(index);
        // A chunk starts being filled live only from its first line; else fetch it.
        if (!chunk && n % CHUNK !== 0) continue;
        if (!chunk) { chunk = []; this.chunks.set(index, chunk); this.times.set(index, []); }
        if (n % CHUNK <= chunk.length) {
          chunk[n % CHUNK] = lines[k];
          const stamps = this.times.get(index) || [];
          stamps[n % CHUNK] = times ? times[k] : undefined;
          this.times.set(index, stamps);
        }
      }
      this.total = Math.max(this.total, start + lines.length);
      this.counted();
      if (this.built && this.follow.checked) {
        this.scroller.scrollTop = this.scroller.scrollHeight;
        this.draw();
      }
    }

    async search(query) {
      if (!query) return;
      this.found.textContent = "searching…";
      const reply = await fetch(`/ui/steps/${this.stepId}/log/search?q=${encodeURIComponent(query)}`,
        { credentials: "same-origin" });
      if (!reply.ok) { this.found.textContent = "search failed"; return; }
      const body = await reply.json();
      this.matches = body.lines;
      this.matchAt = -1;
      if (!this.matches.length) { this.found.textContent = "no match"; return; }
      this.step(1);
      this.found.textContent = `${this.matchAt + 1} of ${this.matches.length}${body.truncated ? "+" : ""}`;
    }

    step(direction) {
      if (!this.matches.length) return;
      this.matchAt = (this.matchAt + direction + this.matches.length) % this.matches.length;
      this.found.textContent = `${this.matchAt + 1} of ${this.matches.length}`;
      this.follow.checked = false;
      this.jump(this.matches[this.matchAt], true);
    }
  }

  const viewers = new Map();
  document.querySelectorAll("details.step").forEach((details) => {
    const viewer = new Viewer(details);
    viewers.set(details.dataset.stepId, viewer);
    if (details.open) viewer.build();
    details.addEventListener("toggle", () => { if (details.open) { viewer.build(); viewer.draw(); } });
    if (!FINISHED.has(details.dataset.status) && runId) follow(viewer);
  });

  /** `[[time, count], ...]` (count lines in a row at time) as one time per line. */
  function expandRuns(runs) {
    if (!Array.isArray(runs)) return undefined;
    const times = [];
    runs.forEach(([time, count]) => { for (let k = 0; k < count; k++) times.push(time); });
    return times;
  }

  function follow(viewer) {
    const socket = new WebSocket(`${wsBase}/api/v1/runs/${runId}/logs/ws?step=${viewer.stepId}&offset=${viewer.total}`);
    socket.addEventListener("message", (event) => {
      const message = JSON.parse(event.data);
      if (message.type === "lines") viewer.add(message.start, message.lines, expandRuns(message.time_runs));
      else if (message.type === "restart") viewer.restart();
      else if (message.type === "status" || message.type === "end") {
        viewer.details.dataset.status = message.status;
        setStatus(viewer.details.querySelector("[data-step-status]"), message.status);
        if (message.status === "running" && !viewer.details.open) {
          viewer.details.open = true;
        }
      }
    });
  }

  function openFromHash() {
    const found = /^#s(\d+)L(\d+)$/.exec(location.hash);
    if (!found) return;
    const viewer = viewers.get(found[1]);
    if (!viewer) return;
    viewer.details.open = true;
    viewer.build();
    if (viewer.follow) viewer.follow.checked = false;
    viewer.jump(parseInt(found[2], 10), true);
    viewer.details.scrollIntoView({ block: "start" });
  }
  window.addEventListener("hashchange", openFromHash);
  openFromHash();

  // Every status on the page follows the run's own feed (/ui/ws/runs/<id>): each message
  // is the whole run (status, timings, jobs, steps), so applying the latest one is all
  // it takes, whatever was missed. Everything from the server goes in as text.

  // As the server writes them (the `duration` and `moment` filters), so nothing jumps.
  function duration(seconds) {
    if (seconds === null || seconds === undefined) return "";
    seconds = Math.max(0, seconds);
    const whole = Math.floor(seconds);
    if (whole < 60) return seconds < 10 ? seconds.toFixed(1) + "s" : whole + "s";
    const m = Math.floor(whole / 60), s = whole % 60;
    return m < 60 ? `${m}m ${two(s)}s` : `${Math.floor(m / 60)}h ${two(m % 60)}m`;
  }
  function moment(iso) {
    const when = iso ? new Date(iso) : null;
    if (!when || Number.isNaN(when.getTime())) return "";
    return when.toISOString().slice(0, 19).replace("T", " ") + " UTC";
  }
  function setText(node, text) {
    if (node && node.textContent !== text) node.textContent = text;
  }
  function setProblem(nodes, message) {
    nodes.forEach((node) => {
      node.hidden = !message;
      if (node.tagName !== "DT") setText(node, message || "");
    });
  }

  function applyStep(step) {
    const details = document.querySelector(`details.step[data-step-id="${CSS.escape(String(step.id))}"]`);
    if (!details) return;
    const was = details.dataset.status;
    details.dataset.status = step.status;
    setStatus(details.querySelector("[data-step-status]"), step.status);
    if (step.status === "running" && was !== "running" && !details.open) details.open = true;
    setText(details.querySelector("[data-step-exit]"),
      step.exit_code === null || step.exit_code === undefined ? "" : `exit ${step.exit_code} · `);
    setText(details.querySelector("[data-step-started]"), step.started_at ? moment(step.started_at) + " · " : "");
    const took = step.started_at && step.finished_at
      ? (new Date(step.finished_at) - new Date(step.started_at)) / 1000 : null;
    setText(details.querySelector("[data-step-took]"), took === null ? "" : duration(took) + " · ");
  }

  function applyJob(job) {
    const section = document.querySelector(`section.job[data-job-id="${CSS.escape(String(job.id))}"]`);
    if (!section) return;
    section.dataset.status = job.status;
    setStatus(section.querySelector("[data-job-status]"), job.status);
    let facts = duration(job.duration_seconds);
    if (job.agent) facts += " on " + job.agent;
    if (job.attempts > 1) facts += " · attempt " + job.attempts;
    setText(section.querySelector("[data-job-facts]"), facts);
    setProblem(section.querySelectorAll("[data-job-problem]"), job.error_message);
    job.steps.forEach(applyStep);
  }

  function applyRun(run) {
    runBox.dataset.status = run.status;
    setStatus(runBox.querySelector("[data-run-status]"), run.status);
    const finished = FINISHED.has(run.status);
    runBox.querySelectorAll("[data-when]").forEach((form) => {
      form.hidden = (form.dataset.when === "finished") !== finished;
    });
    setText(document.querySelector("[data-run-queued]"), duration(run.queued_seconds));
    setText(document.querySelector("[data-run-duration]"), duration(run.duration_seconds));
    setProblem(document.querySelectorAll("[data-run-problem]"), run.error_message);
    run.jobs.forEach(applyJob);
  }

  function followRun(delay) {
    const socket = new WebSocket(`${wsBase}/ui/ws/runs/${encodeURIComponent(runId)}`);
    socket.addEventListener("open", () => { runBox.dataset.live = "open"; delay = 1000; });
    socket.addEventListener("message", (event) => {
      const message = JSON.parse(event.data);
      if (message.type === "detail" && String(message.run.id) === runId) applyRun(message.run);
    });
    socket.addEventListener("close", (event) => {
      runBox.dataset.live = "closed";
      if (event.code === 4401 || event.code === 4404) return;  // signed out, or no such run
      setTimeout(() => followRun(Math.min(delay * 2, 30000)), delay);
    });
  }

  function showNotice(text) {
    const main = document.getElementById("main");
    let notice = main.querySelector(".notice[role=status]");
    if (!notice) {
      notice = document.createElement("p");
      notice.className = "notice";
      notice.setAttribute("role", "status");
      main.prepend(notice);
    }
    notice.textContent = text;
  }

  // Cancel without leaving the page: the feed above shows what it did. Should the
  // request fail, the form goes the ordinary way, so the server's error page says why.
  function cancelInPlace(form) {
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const button = form.querySelector("button");
      button.disabled = true;
      try {
        const reply = await fetch(form.action, {
          method: "POST",
          body: new URLSearchParams(new FormData(form)),
          credentials: "same-origin",
          redirect: "manual",  // the 303 back to this page: nothing to load
        });
        if (reply.type === "opaqueredirect" || reply.ok) showNotice("Run cancelled");
        else form.submit();
      } catch (error) {
        form.submit();
      } finally {
        button.disabled = false;
      }
    });
  }

  if (runId) {
    followRun(1000);
    runBox.querySelectorAll('form[data-when="unfinished"]').forEach(cancelInPlace);
  }
})();
