// The voicelock page: record takes, enroll them, record once to unlock, and say plainly what happened.
// Settings come from config.json (params.yaml on the server), so the page records what the service accepts.
import { Microphone, PageError, resample, wavBlob } from "./recorder.js";

const $ = (id) => document.getElementById(id);
let cfg = null;
let takes = []; // one {blob, url, seconds} or null per take
let busy = false;
const lockedUntil = {}; // user → time (ms) their lockout ends, as the service said
let mic = null; // kept open between enrollment takes, closed when idle (the browser shows it is in use)
let micTimer = 0;

// ---- messages --------------------------------------------------------------------------------
function say(text, kind = "info") {
  const m = $("message");
  m.textContent = text;
  m.className = kind;
  m.dataset.kind = kind;
}

/** The server's error as a sentence: its message already names what was wrong; here it only loses
 *  the upload's internal name ("file 2" is "Take 2" on this page) and gains a full stop. */
function serverSentence(text) {
  return String(text || "")
    .replace(/\bfile (\d+)/g, "take $1")
    .split(" — ")
    .map((part) => part.charAt(0).toUpperCase() + part.slice(1))
    .map((part) => (/[.!?]$/.test(part) ? part : part + "."))
    .join(" ");
}

function userName() {
  const user = $("user").value.trim();
  if (!user) throw new PageError("Type a user name first.");
  if (user.length > cfg.max_user_length || !/^[A-Za-z0-9][A-Za-z0-9_.@-]*$/.test(user)) {
    throw new PageError(`A user name is 1 to ${cfg.max_user_length} letters, digits, '_', '.', '@' or '-', starting with a letter or digit.`);
  }
  return user;
}

// ---- talking to the service -------------------------------------------------------------------
async function call(method, path, form) {
  const headers = {};
  const key = $("api-key").value;
  if (key) headers["X-API-Key"] = key;
  let response;
  try {
    response = await fetch(path, { method, body: form, headers });
  } catch (e) {
    throw new PageError("The voicelock service cannot be reached. Check that it is running and try again.");
  }
  let body = {};
  try {
    body = await response.json();
  } catch (e) { /* an answer without JSON is explained by its status below */ }
  if (response.ok) return body;
  const user = form && form.get ? form.get("user") : decodeURIComponent(path.split("/").pop());
  switch (response.status) {
    case 401:
      $("api-key-row").hidden = false;
      throw new PageError(key ? "The API key is wrong. Check it and try again." : "This service needs an API key. Enter it above and try again.");
    case 404:
      throw new PageError(`“${user}” is not enrolled yet. Record your password and enroll first.`);
    case 413:
      throw new PageError("The recording is larger than the service accepts. Record a shorter take.");
    case 429: {
      const wait = Number(response.headers.get("Retry-After")) || 0;
      lockedUntil[user] = Date.now() + wait * 1000;
      refreshButtons();
      setTimeout(refreshButtons, wait * 1000 + 50);
      throw new PageError(`“${user}” is locked after too many failed attempts. Try again in ${wait} seconds.`);
    }
    default:
      if (response.status >= 500) throw new PageError("The service had an internal problem. Try again in a moment.");
      throw new PageError(serverSentence(body.error || `The service refused the request (HTTP ${response.status}).`));
  }
}

// ---- recording -----------------------------------------------------------------------------------
async function openMicrophone() {
  clearTimeout(micTimer);
  if (mic && !mic.stream.active) closeMicrophone(); // unplugged or revoked: open it again
  if (!mic) mic = await Microphone.open();
  return mic;
}

function closeMicrophone() {
  clearTimeout(micTimer);
  if (mic) mic.close();
  mic = null;
}

/** Records one take; the microphone stays open for cfg.mic_idle_seconds so the next take does not
 *  ask for it again, unless `keepOpen` is false. */
async function recordTake(keepOpen = true) {
  const overlay = $("recording"), phase = $("phase"), bar = $("level-bar");
  const meter = bar.parentElement;
  overlay.hidden = false;
  phase.textContent = "…";
  try {
    const m = await openMicrophone();
    const samples = await m.record(cfg, (db) => {
      const pct = Math.max(0, Math.min(100, ((db + 60) / 60) * 100));
      bar.style.width = `${pct}%`;
      meter.setAttribute("aria-valuenow", db.toFixed(0));
    }, (text) => { phase.textContent = text; });
    const audio = await resample(samples, m.rate, cfg.sample_rate);
    return { blob: wavBlob(audio, cfg.sample_rate), seconds: audio.length / cfg.sample_rate };
  } catch (e) {
    closeMicrophone();
    throw e;
  } finally {
    overlay.hidden = true;
    if (keepOpen && mic) micTimer = setTimeout(closeMicrophone, cfg.mic_idle_seconds * 1000);
    else closeMicrophone();
  }
}

/** Runs one user action; any PageError becomes the message line, anything else a generic sentence. */
async function action(fn) {
  if (busy) return;
  busy = true;
  refreshButtons();
  try {
    await fn();
  } catch (e) {
    say(e instanceof PageError ? e.message : `Something went wrong in the page (${e.message}). Reload and try again.`, "error");
    if (!(e instanceof PageError)) console.error(e);
  } finally {
    busy = false;
    refreshButtons();
  }
}

// ---- enrollment --------------------------------------------------------------------------------
function renderTakes() {
  const list = $("takes");
  list.replaceChildren();
  takes.forEach((take, i) => {
    const li = document.createElement("li");
    li.dataset.take = String(i + 1);
    if (!take) {
      li.textContent = `Take ${i + 1}: not recorded yet`;
    } else {
      li.textContent = `Take ${i + 1}: recorded (${take.seconds.toFixed(1)} s)`;
      li.dataset.recorded = "true";
      const audio = document.createElement("audio");
      audio.controls = true;
      audio.src = take.url;
      const redo = document.createElement("button");
      redo.type = "button";
      redo.className = "quiet";
      redo.textContent = "Record again";
      redo.addEventListener("click", () => action(async () => { await captureInto(i); }));
      li.append(audio, redo);
    }
    list.append(li);
  });
}

async function captureInto(i) {
  say(`Recording take ${i + 1}…`);
  const take = await recordTake();
  if (takes[i]) URL.revokeObjectURL(takes[i].url);
  takes[i] = { ...take, url: URL.createObjectURL(take.blob) };
  renderTakes();
  const missing = takes.findIndex((t) => !t);
  say(missing < 0 ? "All takes recorded. Press Enroll." : `Take ${i + 1} recorded. Record take ${missing + 1} next.`, "ok");
}

async function enroll() {
  const user = userName();
  const form = new FormData();
  form.append("user", user);
  takes.forEach((t, i) => form.append("files", t.blob, `take-${i + 1}.wav`));
  closeMicrophone();
  say(`Enrolling “${user}”…`);
  const answer = await call("POST", "/enroll", form);
  say(`Enrolled “${answer.user}” with ${answer.clips} recordings. You can unlock now.`, "ok");
}

async function forget() {
  const user = userName();
  await call("DELETE", `/users/${encodeURIComponent(user)}`);
  say(`Deleted the enrollment of “${user}”.`, "ok");
}

// ---- unlock ------------------------------------------------------------------------------------
function showResult(answer) {
  const r = $("result");
  const t = answer.thresholds;
  const wordOk = answer.word_score >= t.word, speakerOk = answer.speaker_score >= t.speaker;
  r.hidden = false;
  r.dataset.outcome = answer.unlocked ? "unlocked" : "rejected";
  $("verdict").textContent = answer.unlocked ? "Unlocked" : "Rejected";
  $("word-score").textContent = answer.word_score.toFixed(3);
  $("word-threshold").textContent = t.word.toFixed(3);
  $("word-ok").textContent = wordOk ? "✓ matches" : "✗ too low";
  $("speaker-score").textContent = answer.speaker_score.toFixed(3);
  $("speaker-threshold").textContent = t.speaker.toFixed(3);
  $("speaker-ok").textContent = speakerOk ? "✓ matches" : "✗ too low";
  const why = [];
  if (!wordOk) why.push("the word did not sound like the enrolled password");
  if (!speakerOk) why.push("the voice did not sound like the enrolled voice");
  let text = answer.unlocked ? "Welcome back: the password and the voice both match." : `Rejected because ${why.join(" and ")}.`;
  if (answer.locked_for_s) text += ` Too many failed attempts: “${answer.user}” is now locked for ${answer.locked_for_s} seconds.`;
  $("why").textContent = text;
  if (answer.locked_for_s) {
    lockedUntil[answer.user] = Date.now() + answer.locked_for_s * 1000;
    setTimeout(refreshButtons, answer.locked_for_s * 1000 + 50);
  }
}

async function unlock() {
  const user = userName();
  $("result").hidden = true;
  delete $("result").dataset.outcome;
  say("Recording…");
  const take = await recordTake(false);
  const form = new FormData();
  form.append("user", user);
  form.append("file", take.blob, "unlock.wav");
  say("Checking…");
  const answer = await call("POST", "/unlock", form);
  showResult(answer);
  say(answer.unlocked ? "Unlocked." : "Rejected.", answer.unlocked ? "ok" : "error");
}

// ---- wiring ------------------------------------------------------------------------------------
function refreshButtons() {
  const next = takes.findIndex((t) => !t);
  const locked = Date.now() < (lockedUntil[$("user").value.trim()] || 0);
  $("record-take").disabled = busy || next < 0;
  $("record-take").textContent = next < 0 ? "All takes recorded" : `Record take ${next + 1}`;
  $("enroll-btn").disabled = busy || next >= 0;
  $("unlock-btn").disabled = busy || locked;
  $("forget-btn").disabled = busy;
  document.querySelectorAll("#takes button").forEach((b) => { b.disabled = busy; });
  document.body.dataset.busy = String(busy);
}

async function start() {
  try {
    cfg = await (await fetch("config.json")).json();
  } catch (e) {
    say("The page could not load its settings from the service. Reload the page.", "error");
    return;
  }
  takes = Array(cfg.enroll_takes).fill(null);
  $("api-key-row").hidden = !cfg.api_key_required;
  $("api-key").value = sessionStorage.getItem("voicelock-api-key") || "";
  $("api-key").addEventListener("change", () => sessionStorage.setItem("voicelock-api-key", $("api-key").value));
  $("user").maxLength = cfg.max_user_length;
  $("user").addEventListener("input", refreshButtons);
  $("record-take").addEventListener("click", () => action(() => captureInto(takes.findIndex((t) => !t))));
  $("enroll-btn").addEventListener("click", () => action(enroll));
  $("unlock-btn").addEventListener("click", () => action(unlock));
  $("forget-btn").addEventListener("click", () => action(forget));
  window.addEventListener("pagehide", closeMicrophone);
  renderTakes();
  refreshButtons();
  document.body.dataset.ready = "true";
}

start();
