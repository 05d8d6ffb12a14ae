// ca-a2a-flow ui: keeps a run's page live from its event stream. No library.
(() => {
  "use strict";
  const root = document.querySelector(".run[data-run]");
  if (!root) return;
  const run = root.dataset.run;
  const base = "/runs/" + encodeURIComponent(run);
  const log = document.getElementById("log");
  const filter = document.getElementById("log-step");
  const seen = new Set();

  // The parts that change (summary, actions, timeline, steps), fetched again
  // after a change; open step details stay open.
  let busy = false, again = false;
  async function refresh() {
    if (busy) { again = true; return; }
    busy = true;
    try {
      const answer = await fetch(base + "/parts", { credentials: "same-origin" });
      if (!answer.ok) return;
      const doc = new DOMParser().parseFromString(await answer.text(), "text/html");
      const open = new Set([...document.querySelectorAll("details.step[open]")].map((d) => d.id));
      for (const id of ["summary", "actions", "timeline", "steps"]) {
        const fresh = doc.getElementById(id), old = document.getElementById(id);
        if (fresh && old) old.replaceWith(document.importNode(fresh, true));
      }
      for (const id of open) { const d = document.getElementById(id); if (d) d.open = true; }
      bindActions();
    } finally {
      busy = false;
      if (again) { again = false; refresh(); }
    }
  }

  function showStep(s) {
    const node = [...document.querySelectorAll("#graph .node")].find((n) => n.dataset.step === s.id);
    if (!node) return;
    node.setAttribute("class", "node s-" + s.state);
    node.querySelector(".icon").textContent = s.icon;
    node.querySelector(".state").textContent = s.label;
    node.querySelector("title").textContent = s.id + ": " + s.label;
  }

  function showLine(l) {
    if (seen.has(l.n)) return;
    seen.add(l.n);
    const line = document.createElement("div");
    line.className = "line l-" + l.level;
    line.dataset.step = l.step || "";
    line.hidden = !!filter.value && filter.value !== line.dataset.step;
    for (const [cls, text] of [["at", l.at], ["level", l.level], ["who", l.step || "run"], ["msg", l.message]]) {
      const span = document.createElement("span");
      span.className = cls;
      span.textContent = text;
      line.append(span, " ");
    }
    const atEnd = log.scrollTop + log.clientHeight >= log.scrollHeight - 8;
    log.append(line);
    if (atEnd) log.scrollTop = log.scrollHeight;
  }

  filter.addEventListener("change", () => {
    for (const line of log.children) line.hidden = !!filter.value && filter.value !== line.dataset.step;
  });
  document.getElementById("graph").addEventListener("click", (e) => {
    const node = e.target.closest(".node");
    if (!node) return;
    filter.value = node.dataset.step;
    filter.dispatchEvent(new Event("change"));
    const details = [...document.querySelectorAll("details.step")].find((d) => d.dataset.step === node.dataset.step);
    if (details) details.open = true;
  });

  function bindActions() {
    for (const button of document.querySelectorAll("button[data-action]")) {
      button.onclick = async () => {
        if (!window.confirm(button.dataset.confirm)) return;
        button.disabled = true;
        // Said outside the parts a refresh replaces, so that it stays readable.
        const said = document.getElementById("action-said");
        try {
          const answer = await fetch(base + "/" + button.dataset.action, {
            method: "POST",
            credentials: "same-origin",
            headers: { "X-CA-A2A-Flow-Action": button.dataset.action },
          });
          said.className = answer.ok ? "note" : "error";
          said.textContent = await answer.text();
        } catch (e) {
          said.className = "error";
          said.textContent = "the server did not answer: " + e;
          button.disabled = false;
        }
        refresh();
      };
    }
  }
  bindActions();

  const events = new EventSource(base + "/live");
  events.addEventListener("step", (e) => showStep(JSON.parse(e.data)));
  events.addEventListener("run", (e) => {
    const r = JSON.parse(e.data);
    root.dataset.state = r.state;
  });
  events.addEventListener("changed", () => refresh());
  events.addEventListener("log", (e) => showLine(JSON.parse(e.data)));
  events.addEventListener("open", () => root.classList.remove("offline"));
  events.addEventListener("error", () => root.classList.add("offline"));
})();
