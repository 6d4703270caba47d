// Taskmaster's page: the process table, kept live by the server's event
// stream (/events: a snapshot, then state changes as the daemon signals
// them). No framework: one innerHTML build for a snapshot, one row's cells
// for a change.
"use strict";

(function () {
  const UP = new Set(["STARTING", "RUNNING", "STOPPING"]);
  const meta = document.querySelector('meta[name="csrf-token"]');
  const csrf = meta ? meta.content : "";
  const loggedIn = document.body.dataset.auth === "session" && csrf !== "";
  const tbody = document.querySelector("#processes tbody");
  const byName = new Map();  // name -> {row, tr}
  const $ = (id) => document.getElementById(id);
  let present = false;
  let tailName = "";

  const ESC = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };
  const esc = (s) => String(s).replace(/[&<>"']/g, (c) => ESC[c]);

  function uptime(row, nowUs) {
    if (!UP.has(row.state) || !row.started_us) return "";
    let s = Math.max(0, Math.floor((nowUs - row.started_us) / 1e6));
    const d = Math.floor(s / 86400); s -= d * 86400;
    const h = Math.floor(s / 3600); s -= h * 3600;
    const m = Math.floor(s / 60); s -= m * 60;
    const hms = h + ":" + String(m).padStart(2, "0") + ":" + String(s).padStart(2, "0");
    return d ? d + "d " + hms : hms;
  }

  const SIGNALS = { 1: "SIGHUP", 2: "SIGINT", 3: "SIGQUIT", 6: "SIGABRT", 9: "SIGKILL",
    10: "SIGUSR1", 11: "SIGSEGV", 12: "SIGUSR2", 13: "SIGPIPE", 14: "SIGALRM", 15: "SIGTERM" };
  const two = (n) => String(n).padStart(2, "0");

  function clock(us) {
    const t = new Date(us / 1000);
    const hms = two(t.getHours()) + ":" + two(t.getMinutes()) + ":" + two(t.getSeconds());
    if (t.toDateString() === new Date().toDateString()) return hms;
    return t.getFullYear() + "-" + two(t.getMonth() + 1) + "-" + two(t.getDate()) + " " + hms;
  }

  function lastExit(row) {
    if (!row.last_exit_us) return "";
    const st = row.last_exit_status;
    const what = st < 0 ? (SIGNALS[-st] || "signal " + -st) : "exit " + st;
    return what + (row.last_exit_expected ? "" : " (unexpected)") + ", " + clock(row.last_exit_us);
  }

  // The daemon's description starts with what the Pid and Uptime columns
  // show (and keep ticking): the rest (readiness, health, STATUS=) is news.
  const PID_UPTIME = /^pid \d+, uptime (\d+ days?, )?[\d:.]+(, |; )?/;

  function note(row) {
    if (row.spawn_error) return row.spawn_error;
    return UP.has(row.state) ? row.description.replace(PID_UPTIME, "") : row.description;
  }

  function buttons(row) {
    if (!loggedIn) return "";
    const up = UP.has(row.state) ? "" : " disabled";
    const down = UP.has(row.state) ? " disabled" : "";
    return '<button data-act="start"' + down + ">Start</button>" +
      '<button data-act="stop"' + up + ">Stop</button>" +
      '<button data-act="restart">Restart</button>' +
      '<button data-act="signal"' + up + ">Signal…</button>" +
      '<button data-act="tail">Output</button>';
  }

  // A row's cells, as HTML: the table is built from these in one go, and a
  // change rewrites only the cells that differ.
  function parts(row, nowUs) {
    return [esc(row.name), '<span class="st st-' + esc(row.state) + '">' + esc(row.state) +
      "</span>", String(row.pid || ""), uptime(row, nowUs), String(row.restarts),
      esc(lastExit(row)), esc(note(row)), buttons(row)];
  }
  const CLASSES = ["", "", "", ' class="up"', "", "", ' class="desc"', ' class="control"'];

  function cells(row, nowUs) {
    return parts(row, nowUs).map((html, i) => "<td" + CLASSES[i] + ">" + html + "</td>").join("");
  }

  // A cell cut short (…) shows all of its text on hover.
  tbody.addEventListener("mouseover", (e) => {
    const td = e.target.closest("td");
    if (td && td.scrollWidth > td.clientWidth) td.title = td.textContent;
  });

  function summary() {
    let running = 0;
    for (const { row } of byName.values()) if (row.state === "RUNNING") running++;
    $("summary").textContent = byName.size + " processes, " + running + " running";
  }

  function setPresent(p, version) {
    present = p;
    $("daemon").textContent = p ? "taskmasterd" + (version ? " " + version : "") + ": live"
      : "taskmasterd is not on the bus";
    $("daemon").className = "daemon " + (p ? "live" : "absent");
  }

  function snapshot(data) {
    const nowUs = Date.now() * 1000;
    const html = [];
    for (const row of data.processes) {
      html.push('<tr data-name="' + esc(row.name) + '">' + cells(row, nowUs) + "</tr>");
    }
    tbody.innerHTML = html.join("");
    byName.clear();
    const trs = tbody.children;
    data.processes.forEach((row, i) => byName.set(row.name, { row, tr: trs[i] }));
    setPresent(data.present, "");
    summary();
    if (window.taskmasterFirstStatus === undefined) {
      window.taskmasterFirstStatus = performance.now();  // the bench's measure
    }
  }

  function update(row) {
    const entry = byName.get(row.name);
    if (entry) {
      const before = parts(entry.row, Date.now() * 1000);
      const after = parts(row, Date.now() * 1000);
      entry.row = row;
      for (let i = 0; i < after.length; i++) {
        if (i !== 3 && after[i] !== before[i]) entry.tr.cells[i].innerHTML = after[i];
      }
      entry.tr.cells[3].textContent = uptime(row, Date.now() * 1000);
    } else {
      const tr = document.createElement("tr");
      tr.dataset.name = row.name;
      tr.innerHTML = cells(row, Date.now() * 1000);
      tbody.appendChild(tr);
      byName.set(row.name, { row, tr });
    }
  }

  function onState(ev) {
    // The signal, at once; the refreshed row (description, restarts...) follows.
    const entry = byName.get(ev.name);
    if (!entry) return;
    const row = Object.assign({}, entry.row, { state: ev.state, pid: ev.pid });
    if (UP.has(ev.state) && !UP.has(ev.old)) row.started_us = Date.now() * 1000;
    update(row);
    summary();
    // The bench's measure: when (epoch ms) the page showed the latest change.
    window.taskmasterLastState = { name: ev.name, state: ev.state,
      at: performance.timeOrigin + performance.now() };
    if (ev.name === tailName && !following) loadTail();
  }

  function onRows(data) {
    for (const row of data.rows) update(row);
    for (const name of data.removed) {
      const entry = byName.get(name);
      if (entry) { entry.tr.remove(); byName.delete(name); }
    }
    summary();
  }

  function connect() {
    const source = new EventSource("/events");
    source.addEventListener("snapshot", (e) => snapshot(JSON.parse(e.data)));
    source.addEventListener("state", (e) => onState(JSON.parse(e.data)));
    source.addEventListener("rows", (e) => onRows(JSON.parse(e.data)));
    source.addEventListener("presence", (e) => setPresent(JSON.parse(e.data).present, ""));
    source.addEventListener("open", () => { $("daemon").classList.remove("stale"); });
    source.addEventListener("error", () => {
      $("daemon").textContent = "connection to taskmaster-web lost: reconnecting…";
      $("daemon").className = "daemon stale";
    });
  }

  function say(text) { $("message").textContent = text; }

  async function post(url, body) {
    const response = await fetch(url, {
      method: "POST", credentials: "same-origin",
      headers: { "X-CSRF-Token": csrf, "Content-Type": "application/json" },
      body: JSON.stringify(body || {}),
    });
    const data = await response.json().catch(() => ({}));
    if (response.status === 401) throw new Error("not logged in (or the session expired): log in again");
    if (!response.ok) throw new Error(data.error || response.statusText);
    return data;
  }

  async function act(name, action, body) {
    say("");
    try {
      await post("/api/processes/" + encodeURIComponent(name) + "/" + action, body);
    } catch (err) {
      say(name + ": " + action + ": " + err.message);
    }
  }

  let following = null;  // the EventSource of a followed output
  const KEEP = 262144;  // characters of output the view keeps

  function stopFollow() {
    if (following) { following.close(); following = null; }
  }

  function startFollow(name, stream) {
    const text = $("tail-text");
    following = new EventSource("/api/processes/" + encodeURIComponent(name) +
      "/follow?bytes=65536&stream=" + stream);
    following.addEventListener("output", (e) => {
      const data = JSON.parse(e.data);
      const atEnd = text.scrollTop + text.clientHeight >= text.scrollHeight - 4;
      if (data.start) {
        text.textContent = (data.cut ? "…\n" : "") + data.text;
      } else {
        text.textContent = (text.textContent + data.text).slice(-KEEP);
      }
      if (atEnd || data.start) text.scrollTop = text.scrollHeight;
    });
  }

  async function loadTail() {
    stopFollow();
    const name = tailName;
    const stream = $("tail-stream").value;
    $("tail-name").textContent = name + " — last output";
    try {
      const response = await fetch("/api/processes/" + encodeURIComponent(name) +
        "/tail?bytes=65536&stream=" + stream, { credentials: "same-origin" });
      const data = await response.json();
      if (name !== tailName || following) return;
      if (!response.ok) {
        $("tail-text").textContent = data.error;
      } else if (data.unavailable === "NotAFile") {
        $("tail-text").textContent = "Its " + stream + " is not kept in a file: it goes to " +
          "the journal (journalctl shows it) or is discarded.";
      } else if (data.unavailable) {
        $("tail-text").textContent = "No output yet: it never ran.";
      } else {
        $("tail-text").textContent = (data.cut ? "…\n" : "") + data.text;
        $("tail-text").scrollTop = $("tail-text").scrollHeight;
        if ($("tail-follow").checked) startFollow(name, stream);
      }
    } catch (err) {
      $("tail-text").textContent = String(err.message);
    }
  }

  function showTail(name) {
    tailName = name;
    $("tail").hidden = false;
    loadTail();
  }

  tbody.addEventListener("click", (e) => {
    const button = e.target.closest("button[data-act]");
    if (!button || !loggedIn) return;
    const name = button.closest("tr").dataset.name;
    const action = button.dataset.act;
    if (action === "tail") return showTail(name);
    if (action === "signal") {
      $("signal-name").textContent = name;
      $("signal-dialog").returnValue = "";
      $("signal-dialog").showModal();
      return;
    }
    act(name, action);
  });
  $("signal-dialog").addEventListener("close", () => {
    if ($("signal-dialog").returnValue === "send") {
      act($("signal-name").textContent, "signal", { signal: $("signal-choice").value });
    }
  });
  $("tail-refresh").addEventListener("click", loadTail);
  $("tail-stream").addEventListener("change", loadTail);
  $("tail-follow").addEventListener("change", loadTail);
  $("tail-close").addEventListener("click", () => {
    stopFollow();
    tailName = "";
    $("tail").hidden = true;
  });

  if (!loggedIn) {
    $("note").textContent = "Read-only: log in with the service's token to start, stop, " +
      "restart or signal processes and to read their output.";
  }
  if (new URLSearchParams(location.search).get("login") === "failed") {
    say("Wrong token.");
    history.replaceState(null, "", "/");
  }
  // Uptimes tick here, from the start times already received (no request),
  // in the rows on screen only: rows are one line high each (nowrap).
  setInterval(() => {
    const rows = tbody.rows;
    if (!rows.length || document.hidden) return;
    const height = rows[0].offsetHeight || 1;
    const top = tbody.getBoundingClientRect().top;
    const first = Math.max(0, Math.floor(-top / height));
    const last = Math.min(rows.length, first + Math.ceil(window.innerHeight / height) + 1);
    const nowUs = Date.now() * 1000;
    for (let i = first; i < last; i++) {
      const entry = byName.get(rows[i].dataset.name);
      if (entry && UP.has(entry.row.state)) rows[i].cells[3].textContent = uptime(entry.row, nowUs);
    }
  }, 1000);
  connect();
})();
