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
// The proof of ownership from the last successful unlock: {user, token, expiresAt}. It replaces or
// deletes an enrollment, so it lives in this page's memory only — never localStorage/sessionStorage,
// where it would outlive the page and be readable by whatever reads storage later.
let proof = null;
let proofTimer = 0;

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
/** Sends one request; resolves to the JSON answer, or throws a PageError that says what to do.
 *  `token` is the proof of ownership, sent as the header the service reads it from. */
async function call(method, path, form, token = null) {
  const headers = {};
  const key = $("api-key").value;
  if (key) headers["X-API-Key"] = key;
  if (token) headers["X-Unlock-Token"] = token;
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
  throw refusal(response, body, path, user);
}

/** A refused request as a sentence for the person at the page. */
function refusal(response, body, path, user) {
  switch (response.status) {
    case 401:
      $("api-key-row").hidden = false;
      return new PageError($("api-key").value ? "The API key is wrong. Check it and try again." : "This service needs an API key. Enter it above and try again.");
    case 403:
      // The page sends no admin key, so a 403 always means the unlock token: used, expired or another user's.
      dropProof();
      return new PageError(`The proof from your last unlock is no longer valid (used or expired). Unlock “${user}” again, then try once more.`);
    case 404:
      return new PageError(`“${user}” is not enrolled yet. Record your password and enroll first.`);
    case 409:
      if (path !== "/enroll") break; // a model change (from /unlock): the server's sentence says what to do
      return new PageError(proofFor(user, false)
        ? `“${user}” is already enrolled — press Re-enroll under Unlock to replace the enrollment.`
        : `“${user}” is already enrolled — unlock first, then re-enroll.`);
    case 413:
      return new PageError("The recording is larger than the service accepts. Record a shorter take.");
    case 429: {
      const wait = Number(response.headers.get("Retry-After")) || 0;
      lockFor(user, wait);
      return new PageError(`“${user}” is locked after too many failed attempts. Try again in ${wait} seconds.`);
    }
    case 503:
      return new PageError("The service is busy. Try again in a moment.");
  }
  if (response.status >= 500) return new PageError("The service had an internal problem. Try again in a moment.");
  return new PageError(serverSentence(body.error || `The service refused the request (HTTP ${response.status}).`));
}

/** Disables Unlock for `user` until the service's lockout ends. */
function lockFor(user, seconds) {
  lockedUntil[user] = Date.now() + seconds * 1000;
  refreshButtons();
  setTimeout(refreshButtons, seconds * 1000 + 50);
}

// ---- proof of ownership (the token of a successful unlock) ---------------------------------------
function holdProof(user, token, seconds) {
  proof = { user, token, expiresAt: Date.now() + seconds * 1000 };
  clearInterval(proofTimer);
  proofTimer = setInterval(refreshButtons, 1000); // the "expires in N s" countdown
  refreshButtons();
}

function dropProof() {
  proof = null;
  clearInterval(proofTimer);
  refreshButtons();
}

/** The token proving `user`'s ownership, or (when `required`) a PageError saying to unlock first. */
function proofFor(user, required = true) {
  if (proof && proof.user === user && Date.now() < proof.expiresAt) return proof.token;
  if (required) throw new PageError(`Unlock “${user}” first: re-enrolling or deleting needs a fresh unlock.`);
  return null;
}

/** Shows the Re-enroll/Delete panel while a proof for the user typed above is valid. */
function refreshProof(user, takesReady) {
  const left = proof ? Math.ceil((proof.expiresAt - Date.now()) / 1000) : 0;
  if (proof && left <= 0) {
    proof = null; // expired: the service would refuse it, so stop offering it
    clearInterval(proofTimer);
  }
  const shown = Boolean(proof) && proof.user === user;
  $("proof").hidden = !shown;
  if (!shown) return;
  $("proof-expiry").textContent = `expires in ${left} s`;
  $("proof-hint").textContent = takesReady
    ? "Re-enroll replaces your enrollment with the takes recorded in step 1."
    : `To re-enroll, record ${takes.length} new takes in step 1, then press Re-enroll.`;
  $("reenroll-btn").disabled = busy || !takesReady;
  $("delete-btn").disabled = busy;
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

/** Records one take while the overlay shows `prompt` (what to say); the microphone stays open for
 *  cfg.mic_idle_seconds so the next take does not ask for it again, unless `keepOpen` is false. */
async function recordTake(keepOpen = true, prompt = "Say your password") {
  const overlay = $("recording"), phase = $("phase"), bar = $("level-bar");
  const meter = bar.parentElement;
  $("prompt").textContent = prompt;
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

/** The recorded takes as the /enroll form. */
function takesForm(user) {
  const form = new FormData();
  form.append("user", user);
  takes.forEach((t, i) => form.append("files", t.blob, `take-${i + 1}.wav`));
  return form;
}

async function enroll() {
  const user = userName();
  closeMicrophone();
  say(`Enrolling “${user}”…`);
  const answer = await call("POST", "/enroll", takesForm(user));
  say(`Enrolled “${answer.user}” with ${answer.clips} recordings. You can unlock now.`, "ok");
}

/** Replaces an enrollment: the same upload as Enroll, with the proof from this page's last unlock. */
async function reenroll() {
  const user = userName();
  const token = proofFor(user);
  closeMicrophone();
  say(`Re-enrolling “${user}”…`);
  const answer = await call("POST", "/enroll", takesForm(user), token);
  if (!answer.replaced) {
    say(`Enrolled “${answer.user}” with ${answer.clips} recordings. You can unlock now.`, "ok");
    return; // the enrollment had gone meanwhile: the token was not needed, and is still unspent
  }
  dropProof(); // spent by the service: single use
  say(`Re-enrolled “${answer.user}” with ${answer.clips} recordings: the old enrollment is replaced.`, "ok");
}

async function forget() {
  const user = userName();
  const token = proofFor(user);
  const answer = await call("DELETE", `/users/${encodeURIComponent(user)}`, undefined, token);
  dropProof();
  hideResult();
  const retired = answer.name_retired ? " The name stays reserved: only the administrator can enroll it again." : "";
  say(`Deleted the enrollment of “${user}”.${retired}`, "ok");
}

// ---- unlock ------------------------------------------------------------------------------------
function hideResult() {
  $("result").hidden = true;
  delete $("result").dataset.outcome;
}

/** The verdict, once and in words; scores only from a service in explain mode, which alone sends them. */
function showResult(answer) {
  const r = $("result");
  r.hidden = false;
  r.dataset.outcome = answer.unlocked ? "unlocked" : "rejected";
  $("verdict").textContent = answer.unlocked ? "Unlocked" : "Not recognised";
  // Without explain the service does not say which check failed (that would tell a guesser what to
  // change), so neither does the page.
  let why = answer.unlocked ? `Welcome back, “${answer.user}”: the password and the voice both match.`
    : cfg.liveness === "challenge" ? "The password, the voice or a challenge word did not match."
      : "The password or the voice did not match the enrollment.";
  if (answer.locked_for_s) {
    why += ` Too many failed attempts: “${answer.user}” is now locked for ${answer.locked_for_s} seconds.`;
    lockFor(answer.user, answer.locked_for_s);
  }
  $("why").textContent = why;
  showScores(answer);
  if (answer.unlocked && answer.token) holdProof(answer.user, answer.token, answer.token_expires_in_s);
}

function showScores(answer) {
  const shown = Boolean(cfg.explain && answer.thresholds);
  $("scores").hidden = !shown;
  if (!shown) return;
  scoreRow("word", answer.word_score, answer.thresholds.word);
  scoreRow("speaker", answer.speaker_score, answer.thresholds.speaker);
  const challenges = Object.keys(answer).filter((k) => /^challenge_\d+$/.test(k)).sort();
  const lines = [answer.reason_detail, ...challenges.map((k) => `Challenge word ${k.split("_")[1]}: ${answer[k]}`)];
  $("detail").replaceChildren(...lines.filter(Boolean).map((text) => {
    const li = document.createElement("li");
    li.textContent = text;
    return li;
  }));
}

function scoreRow(name, score, threshold) {
  $(`${name}-score`).textContent = score.toFixed(3);
  $(`${name}-threshold`).textContent = threshold.toFixed(3);
  $(`${name}-ok`).textContent = score >= threshold ? "✓ matches" : "✗ too low";
}

/** Liveness: asks the service for words, then records the password and one take per word, in order,
 *  into `form`. The service draws the words per unlock, so a recording made earlier cannot hold them. */
async function recordChallenged(user, form) {
  const ask = new FormData();
  ask.append("user", user);
  const challenge = await call("POST", "/challenge", ask);
  say(`Say your password, then: ${challenge.words.join(", ")}`);
  try {
    form.append("file", (await recordTake(true, "Say your password")).blob, "unlock.wav");
    for (const [i, word] of challenge.words.entries()) {
      form.append("challenge_files", (await recordTake(true, `Now say “${word}”`)).blob, `challenge-${i + 1}.wav`);
    }
  } finally {
    closeMicrophone();
  }
  form.append("challenge", challenge.challenge);
}

async function unlock() {
  const user = userName();
  hideResult();
  // A locked-out user hears so now, not after recording (the service would refuse the take anyway).
  const state = await call("GET", `/users/${encodeURIComponent(user)}/lock`);
  if (state.locked_for_s > 0) {
    lockFor(user, state.locked_for_s);
    throw new PageError(`“${user}” is locked after too many failed attempts. Try again in ${state.locked_for_s} seconds.`);
  }
  const form = new FormData();
  form.append("user", user);
  if (cfg.liveness === "challenge") {
    await recordChallenged(user, form);
  } else {
    say("Recording…");
    form.append("file", (await recordTake(false)).blob, "unlock.wav");
  }
  say("Checking…");
  const answer = await call("POST", "/unlock", form);
  say(""); // the verdict below says it, once
  showResult(answer);
}

// ---- wiring ------------------------------------------------------------------------------------
function refreshButtons() {
  const next = takes.findIndex((t) => !t);
  const user = $("user").value.trim();
  const locked = Date.now() < (lockedUntil[user] || 0);
  $("record-take").disabled = busy || next < 0;
  $("record-take").textContent = next < 0 ? "All takes recorded" : `Record take ${next + 1}`;
  $("enroll-btn").disabled = busy || next >= 0;
  $("unlock-btn").disabled = busy || locked;
  refreshProof(user, next < 0);
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
  if (cfg.vocabulary && cfg.vocabulary.length) {  // the words the model was trained on: any works as a password
    $("vocabulary").textContent = `Words this model knows (pick one): ${cfg.vocabulary.join(", ")}.`;
    $("vocabulary").hidden = false;
  }
  $("user").maxLength = cfg.max_user_length;
  $("user").addEventListener("input", refreshButtons);
  if (cfg.liveness === "challenge") {
    $("unlock-hint").textContent = "Say your password, then the word(s) the page asks for, each after its countdown. "
      + "After a successful unlock you can re-enroll or delete this user.";
  }
  $("record-take").addEventListener("click", () => action(() => captureInto(takes.findIndex((t) => !t))));
  $("enroll-btn").addEventListener("click", () => action(enroll));
  $("unlock-btn").addEventListener("click", () => action(unlock));
  $("reenroll-btn").addEventListener("click", () => action(reenroll));
  $("delete-btn").addEventListener("click", () => action(forget));
  window.addEventListener("pagehide", closeMicrophone);
  renderTakes();
  refreshButtons();
  document.body.dataset.ready = "true";
}

start();
