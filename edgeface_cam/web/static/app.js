// edgeface-cam web UI: plain JavaScript, no build step. Forms and buttons carry data-api
// (the REST path) and data-method; the server renders the pages, this file only sends the
// actions and reports the answer. Loaded as a file: the CSP allows no inline script.
"use strict";

function say(text, bad) {
  const msg = document.getElementById("msg");
  if (!msg) return;
  msg.textContent = text;
  msg.className = bad ? "msg bad" : "msg";
  msg.hidden = !text;
}

async function call(path, method, body) {
  const opts = {method: method || "GET", credentials: "same-origin", headers: {}};
  if (body instanceof FormData) {
    opts.body = body;
  } else if (body !== undefined) {
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  const r = await fetch(path, opts);
  let data = null;
  try { data = await r.json(); } catch (e) { data = null; }
  if (r.status === 401 && !path.endsWith("/login")) { location.href = "/login"; }
  return {ok: r.ok, status: r.status, data: data};
}

function detail(res) {
  return (res.data && res.data.detail) || ("error " + res.status);
}

function after(next) {
  if (next === "reload") location.reload();
  else if (next) location.href = next;
}

function formJson(form) {
  const out = {};
  for (const [k, v] of new FormData(form).entries()) out[k] = v;
  return out;
}

async function onApiForm(ev) {
  const form = ev.target.closest("form[data-api]");
  if (!form) return;
  ev.preventDefault();
  const res = await call(form.dataset.api, form.dataset.method || "POST", formJson(form));
  if (!res.ok) { say(detail(res), true); return; }
  after(form.dataset.next);
}

async function onApiButton(ev) {
  const btn = ev.target.closest("button[data-api]");
  if (!btn) return;
  ev.preventDefault();
  if (btn.dataset.confirm && !window.confirm(btn.dataset.confirm)) return;
  const body = btn.dataset.body ? JSON.parse(btn.dataset.body) : undefined;
  const res = await call(btn.dataset.api, btn.dataset.method || "POST", body);
  if (!res.ok) { say(detail(res), true); return; }
  after(btn.dataset.next);
}

function showResults(list, res) {
  list.textContent = "";
  const rows = (res.data && res.data.results) || [];
  for (const r of rows) {
    const li = document.createElement("li");
    li.className = r.ok ? (r.skipped ? "dim" : "good") : "bad";
    li.textContent = r.file + ": " + (r.ok ? (r.skipped ? "already enrolled" :
      "face added (quality " + r.quality + ")") : r.error);
    list.appendChild(li);
  }
}

async function upload(path, data, card) {
  const res = await call(path, "POST", data);
  const list = card.querySelector(".results");
  if (list) showResults(list, res);
  if (res.ok) {
    say(res.data.added + " face(s) added to " + res.data.name);
    setTimeout(() => location.reload(), 1200);
  } else {
    say(detail(res), true);
  }
}

async function onUpload(ev) {
  const form = ev.target.closest("form[data-upload]");
  if (!form) return;
  ev.preventDefault();
  const data = new FormData();
  for (const f of form.querySelector("input[type=file]").files) data.append("image", f, f.name);
  say("analysing the photos…");
  await upload(form.dataset.upload, data, form.closest(".card"));
}

async function onTake(ev) {
  const btn = ev.target.closest("button[data-take]");
  if (!btn) return;
  ev.preventDefault();
  const cam = encodeURIComponent(btn.dataset.take);
  const r = await fetch("/api/cameras/" + cam + "/snapshot.jpg?annotated=false",
                        {credentials: "same-origin"});
  if (!r.ok) { say("no picture from " + btn.dataset.take, true); return; }
  const data = new FormData();
  data.append("image", await r.blob(), btn.dataset.take + ".jpg");
  await upload("/api/people/" + encodeURIComponent(btn.dataset.person) + "/faces", data,
               btn.closest(".card"));
}

async function onAssign(ev) {
  const form = ev.target.closest("form.assign");
  if (!form) return;
  ev.preventDefault();
  const card = form.closest(".group");
  const name = form.querySelector("input[name=name]").value;
  const boxes = Array.from(card.querySelectorAll("input[name=sighting]"));
  const ticked = boxes.filter((b) => b.checked).map((b) => b.value);
  let res;
  if (ticked.length === boxes.length) {
    res = await call("/api/unknowns/" + form.dataset.group + "/assign", "POST", {name: name});
  } else {
    for (const id of ticked) {
      res = await call("/api/sightings/" + id + "/assign", "POST", {name: name});
      if (!res.ok) break;
    }
  }
  if (!res || !res.ok) { say(res ? detail(res) : "no face ticked", true); return; }
  say("named " + name);
  setTimeout(() => location.reload(), 600);
}

document.addEventListener("submit", (ev) => {
  if (ev.target.matches("form[data-upload]")) onUpload(ev);
  else if (ev.target.matches("form.assign")) onAssign(ev);
  else if (ev.target.matches("form[data-api]")) onApiForm(ev);
});
document.addEventListener("click", (ev) => {
  if (ev.target.closest("button[data-take]")) onTake(ev);
  else if (ev.target.closest("button[data-api]") && !ev.target.closest("form[data-api]")) {
    onApiButton(ev);
  }
});

// Live page: who is in view and the recent events, from /api/status once a second.
function fill(list, items, text) {
  list.textContent = "";
  if (!items.length) {
    const li = document.createElement("li");
    li.className = "dim";
    li.textContent = list.classList.contains("events") ? "none yet" : "nobody";
    list.appendChild(li);
  }
  for (const it of items) {
    const li = document.createElement("li");
    li.textContent = text(it);
    list.appendChild(li);
  }
}

async function pollLive() {
  const res = await call("/api/status");
  if (res.ok) {
    for (const cam of res.data.cameras) {
      const list = document.querySelector('.in-view[data-camera="' + CSS.escape(cam.name) + '"]');
      if (list) fill(list, cam.in_view, (t) => (t.name || "unknown") + " #" + t.track_id);
    }
    const events = document.getElementById("events");
    if (events) {
      fill(events, res.data.recent_events, (e) => e.time.slice(11, 19) + " " + e.source + ": " +
        (e.name || "unknown") + (e.name ? " (" + e.score.toFixed(2) + ")" : "") +
        " #" + e.track_id);
    }
  }
  setTimeout(pollLive, 1000);
}

if (document.body.dataset.page === "live" && document.querySelector(".camera")) pollLive();
