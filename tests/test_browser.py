"""The browser page end to end: headless Chromium with a fake microphone against a real `bentoml serve`.

Chromium plays a generated WAV file as the microphone (`--use-file-for-fake-audio-capture`); the
page records takes after its countdown, enrolls them, records once to unlock and shows the answer,
re-enrolls and deletes with the unlock's token, and answers a liveness challenge.
Screenshots of each outcome go to test-output/browser/ in the repository (VOICELOCK_TEST_OUTPUT
overrides it).

Which model? The tiny model the other tests share cannot tell two voices apart, so this module
trains its own small one (about a minute on 2 cores). Even so it is far from the shipped model: its
thresholds are calibrated for 5% FAR instead of params.yaml's 0.1%, and the test does not judge the
model. It judges the page: the speaker and takes it plays are the ones the API itself, given the
source files directly, unlocks (the owner) and rejects (another speaker), and the page must reach
the same answers from what it recorded, uploads must be the played audio, and nothing may be
fetched from anywhere but the service.
"""

from __future__ import annotations

import io
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio
import yaml

from tests import servers
from tests.conftest import REPO, run_model_stages, tiny_params_dict, write_params
from voicelock.enrollment import Unlocker
from voicelock.features import load_split
from voicelock.params import Params, load_params
from voicelock.replay import decode

pytestmark = pytest.mark.slow
playwright = pytest.importorskip("playwright.sync_api", reason="playwright is in the [test] extra")

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
OUTPUT = Path(os.environ.get("VOICELOCK_TEST_OUTPUT", REPO / "test-output")) / "browser"
# Enrollment takes must be at least this far (fingerprint cosine) below the replay threshold: two
# takes 0.003 below it on file were refused as one recording once recorded through the page.
REPLAY_HEADROOM = 0.02
FAKE_MIC_RATE = 48_000  # Chromium's fake device reproduced 44.1/48 kHz files most faithfully
# Records every form the page sends: [url, [[field, text or bytes], ...]], so the test can compare
# uploads with what the fake microphone played and see which fields a request carried.
UPLOAD_SPY = """
window.__forms = [];
const realFetch = window.fetch;
window.fetch = async (url, options) => {
  if (options && options.body instanceof FormData) {
    const fields = [];
    for (const [name, value] of options.body.entries()) {
      fields.push([name, value instanceof Blob ? Array.from(new Uint8Array(await value.arrayBuffer())) : value]);
    }
    window.__forms.push([String(url), fields]);
  }
  return realFetch(url, options);
};
"""


@pytest.fixture(scope="module")
def page_params(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small model that separates voices on its own synthetic corpus, and a page that counts down 1 s."""
    root = tmp_path_factory.mktemp("browser")
    raw = tiny_params_dict(root)
    raw["data"]["synth"].update(n_speakers=48, takes_per_word=4)
    raw["model"].update(channels=64, dilations=[1, 2, 4], attention_hidden=32, word_embedding=32,
                        speaker_embedding=64, backend_dims=32)
    # Triplet losses only: the class-centre losses trail them for the first ~10 epochs (measured on the
    # default corpus), longer than this ~40 s training lasts.
    no_classes = {"speaker_class_weight": 0.0, "word_class_weight": 0.0}
    raw["pretrain"].update(max_epochs=40, batches_per_epoch=10, speakers_per_batch=12, patience=10, **no_classes)
    raw["finetune"].update(max_epochs=6, batches_per_epoch=10, patience=10, **no_classes)
    raw["enroll"].update(min_word_agreement=0.5, min_speaker_agreement=0.4)  # the shipped checks
    # As lenient as the model is small: the password at FAR 0.05, the same-voice check of a re-enrollment
    # (speaker_any_word) at 0.1 — at 0.01 even a template against itself fell short of it here.
    raw["evaluate"].update(target_far=0.05, raw_floor_far=0.15, challenge_speaker_far=0.1)
    raw["service"].update(lockout_failures=2, lockout_seconds=120)
    raw["page"].update(countdown_seconds=1, mic_idle_seconds=30)
    path = write_params(root, raw)
    from voicelock.data.acquire import acquire_corpus

    params = load_params(path)
    run_model_stages(params, acquire_corpus(params))
    return path


@pytest.fixture(scope="module")
def server(page_params: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[servers.Server]:
    srv = servers.serve_model(page_params, tmp_path_factory.mktemp("bentoml-page"))
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def live_server(server: servers.Server, page_params: Path,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[servers.Server]:
    """The same model (already in `server`'s BentoML store) served with liveness challenges of one word
    and explain on, from a database of its own."""
    root = tmp_path_factory.mktemp("browser-liveness")
    raw = yaml.safe_load(page_params.read_text())
    raw["service"].update(liveness="challenge", challenge_words=1, explain=True, workers=1,
                          database_url=f"sqlite:///{root / 'enrollments.db'}")
    env = {**server.env, "VOICELOCK_PARAMS": str(write_params(root, raw))}
    srv = servers.Server(f"http://127.0.0.1:{servers.free_port()}", env, root / "serve.log")
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def speakers(page_params: Path) -> tuple[list[Path], Path, Path]:
    return choose_speakers(load_params(page_params))


def fake_microphone(clips: list[Path], out: Path, gap_s: float = 3.0) -> Path:
    """A WAV the fake device loops: each clip after `gap_s` of near-silence, at 48 kHz.

    The gap outlasts what is left of a clip after its take (1.3 s from the voice's start) plus the
    next take's 1 s countdown, with room for the browser's delays, so consecutive takes record
    consecutive clips. With 1 s gaps a take sometimes started mid-clip and skipped to the one after,
    and three takes of three looping clips could record one clip twice (measured: "Take 3 is the same
    recording as take 1")."""
    rng = np.random.default_rng(0)
    gap = lambda: rng.normal(0, 1e-4, int(FAKE_MIC_RATE * gap_s)).astype(np.float32)  # noqa: E731
    parts = []
    for clip in clips:
        x, rate = sf.read(clip, dtype="float32")
        parts += [gap(), torchaudio.functional.resample(torch.from_numpy(x), rate, FAKE_MIC_RATE).numpy()]
    sf.write(out, np.concatenate(parts), FAKE_MIC_RATE, subtype="PCM_16")  # looped: one gap between clips
    return out


def best_match(upload: bytes, sources: list[Path]) -> float:
    """Highest normalised cross-correlation of an uploaded recording with any source clip."""
    rec, _ = sf.read(io.BytesIO(upload), dtype="float32")
    best = 0.0
    for src in sources:
        x, _ = sf.read(src, dtype="float32")
        c = np.correlate(rec, x, "full")
        best = max(best, float(np.abs(c).max() / (np.linalg.norm(rec) * np.linalg.norm(x) + 1e-12)))
    return best


class Browser:
    """Headless Debian Chromium whose microphone plays `wav`; every request is recorded."""

    def __init__(self, pw, wav: Path):
        self.browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={wav}", "--no-sandbox", "--disable-gpu",
            "--disable-background-networking", "--disable-component-update", "--no-first-run"])
        self.page = self.browser.new_context(permissions=["microphone"]).new_page()
        self.requests: list = []  # playwright Requests: url, method, headers
        self.errors: list[str] = []
        self.page.on("request", lambda r: self.requests.append(r))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.add_init_script(UPLOAD_SPY)

    def open(self, url: str, user: str) -> None:
        self.page.goto(f"{url}/app/")
        self.page.wait_for_selector("body[data-ready=true]")
        self.page.fill("#user", user)

    def click_and_wait(self, selector: str) -> str:
        self.page.click(selector)
        self.page.wait_for_selector("body[data-busy=false]", timeout=30_000)
        return self.page.inner_text("#message")

    def unlock(self) -> tuple[str, dict]:
        """Press Unlock; (the verdict the page shows, the service's JSON answer)."""
        with self.page.expect_response(lambda r: r.url.endswith("/unlock"), timeout=60_000) as answer:
            message = self.click_and_wait("#unlock-btn")
            # (inside the block: a page that stopped before /unlock fails here, not after a timeout)
            assert message == "", f"the verdict belongs in the result, once: {message!r}"
        return self.page.inner_text("#verdict"), answer.value.json()

    def forms(self, path: str) -> list[list[tuple[str, object]]]:
        """The fields of every form sent to `path`, uploads as bytes."""
        return [[(name, bytes(v) if isinstance(v, list) else v) for name, v in fields]
                for url, fields in self.page.evaluate("window.__forms") if url.endswith(path)]

    def uploads(self) -> list[bytes]:
        return [v for form in self.forms("") for _, v in form if isinstance(v, bytes)]

    def headers(self, method: str, path: str) -> list[dict[str, str]]:
        """The headers of every `method` request to `path` (names in lower case)."""
        return [r.headers for r in self.requests if r.method == method and r.url.split("?")[0].endswith(path)]

    def stored(self) -> str:
        """Everything the page keeps in localStorage and sessionStorage."""
        return self.page.evaluate("JSON.stringify([{...localStorage}, {...sessionStorage}])")

    def screenshot(self, name: str) -> Path:
        OUTPUT.mkdir(parents=True, exist_ok=True)
        path = OUTPUT / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def close(self, url: str) -> None:
        foreign = [r.url for r in self.requests if not r.url.startswith((url, "blob:", "data:"))]
        self.browser.close()
        assert not foreign, f"the page fetched from outside the service: {foreign}"
        assert not self.errors, f"JavaScript errors on the page: {self.errors}"


def test_page_is_served_locally_with_its_settings(server: servers.Server, page_params: Path):
    import httpx

    params = load_params(page_params)
    page = httpx.get(f"{server.url}/app/")
    assert page.status_code == 200 and "voicelock" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert "http" not in page.text.split("<body>")[0].replace("http-equiv", "")  # no CDN in <head>
    config = httpx.get(f"{server.url}/app/config.json").json()
    assert config["enroll_takes"] == params.page.enroll_takes
    assert config["min_clips"] == params.enroll.min_clips and config["sample_rate"] == params.data.sample_rate
    assert (config["explain"], config["liveness"]) == (False, "off")  # the page shows no scores, asks no words
    assert config["challenge_words"] == params.service.challenge_words
    # The words the served model knows, so that a user picks a password it can tell apart.
    assert config["vocabulary"] == sorted(Unlocker(params.evaluate.out_dir, params.enroll).vocabulary)
    assert params.owner.password in config["vocabulary"]
    for asset in ("app.js", "recorder.js", "capture-worklet.js", "style.css"):
        assert httpx.get(f"{server.url}/app/{asset}").status_code == 200, asset


def choose_speakers(params: Params) -> tuple[list[Path], Path, Path]:
    """Enrollment takes, a held-out take of the same speaker and an impostor's take, all decided by the
    API on the source files before any browser is involved: the test judges the page, not the model.

    The speaker is whichever of the owner and the test speakers the small model unlocks with the
    widest margin (the recorded take differs a little from its source, so a take that only just
    unlocks may not once recorded), among those whose enrollment takes are clearly distinct recordings
    to it: the small model's replay threshold is tight (two genuine takes of one of its test speakers
    came within it), and once recorded, two such takes were refused as "the same recording". The
    impostor is the first other test speaker it rejects."""
    lock = Unlocker(params.evaluate.out_dir, params.enroll)
    word, n_enroll = params.owner.password, params.page.enroll_takes
    takes = {"owner": sorted((Path(params.owner.out_dir) / word).glob("*.wav"))}
    index = load_split(params.features.out_dir, "testing").index
    for speaker, paths in index[index["word"] == word].sort_values("utterance").groupby("speaker")["path"]:
        takes[speaker] = [Path(params.data.raw_dir) / p for p in paths]
    best = (-np.inf, "", Path(), None)
    for speaker, paths in takes.items():
        if len(paths) <= n_enroll:
            continue
        template = lock.enroll_files(paths[:n_enroll])
        sets = [decode(t, lock.fingerprint_dim) for t in template.takes]  # each take, then its shifted copies
        closest = max(float(np.max(sets[j] @ sets[i][0])) for i in range(len(sets)) for j in range(len(sets)) if i != j)
        for take in paths[n_enroll:]:
            d = lock.verify_file(template, take)
            if not d.unlocked or closest > d.thresholds["replay"] - REPLAY_HEADROOM:
                continue
            margin = min(d.word_score - d.thresholds["word"], d.speaker_score - d.thresholds["speaker"],
                         float(d.details["speaker_raw"]) - d.thresholds["speaker_raw"],
                         d.word_score - float(d.details.get("word_rival", -np.inf)) - d.thresholds["word_margin"])
            if margin > best[0]:
                best = (margin, speaker, take, template)
    margin, speaker, genuine, template = best
    assert margin > 0, "the API unlocks no speaker's held-out take"
    for other, paths in takes.items():
        if other not in (speaker, "owner") and not lock.verify_file(template, paths[0]).unlocked:
            return takes[speaker][:n_enroll], genuine, paths[0]
    raise AssertionError(f"the API unlocks every other test speaker's password take for {speaker}")


def enroll_directly(url: str, user: str, clips: list[Path]) -> dict:
    """Enroll from the source files over HTTP: for steps that test the page's later actions."""
    import httpx

    files = [("files", (c.name, c.read_bytes(), "audio/wav")) for c in clips]
    r = httpx.post(f"{url}/enroll", data={"user": user}, files=files, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()


def test_enroll_unlock_and_reject_in_a_real_browser(server: servers.Server, page_params: Path,
                                                    speakers: tuple[list[Path], Path, Path], tmp_path: Path):
    from playwright.sync_api import sync_playwright

    params = load_params(page_params)
    enroll, genuine, impostor = speakers
    user = "owner"
    with sync_playwright() as pw:
        # Enroll: the fake microphone loops the owner's enrollment takes.
        b = Browser(pw, fake_microphone(enroll, tmp_path / "enroll.wav"))
        b.open(server.url, user)
        words = b.page.locator("#vocabulary")
        assert words.is_visible() and params.owner.password in words.text_content()
        # While recording: the countdown, then the level meter moving with the voice.
        b.page.click("#record-take")
        b.page.wait_for_function("() => document.getElementById('phase').textContent === '1'", timeout=10_000)
        b.page.wait_for_function("() => document.getElementById('phase').textContent === 'Recording'", timeout=10_000)
        b.page.wait_for_function("() => document.querySelector('[role=meter]').getAttribute('aria-valuenow') > -40",
                                 timeout=5_000)
        b.screenshot("0-recording")
        b.page.wait_for_selector("body[data-busy=false]", timeout=30_000)
        for i in range(1, params.page.enroll_takes):
            message = b.click_and_wait("#record-take")
            assert f"Take {i + 1} recorded" in message or "All takes recorded" in message, message
        assert b.page.locator("#takes li[data-recorded=true]").count() == params.page.enroll_takes
        message = b.click_and_wait("#enroll-btn")
        assert message == f"Enrolled “{user}” with {params.page.enroll_takes} recordings. You can unlock now."
        b.screenshot("1-enrolled")
        uploads = b.uploads()
        assert len(uploads) == params.page.enroll_takes
        # What was uploaded is what the microphone played (the source at 16 kHz after two resamplings).
        assert all(best_match(u, enroll) > 0.95 for u in uploads), [best_match(u, enroll) for u in uploads]
        # Enrolling the same name again without unlocking first: the service refuses (409), the page
        # says what to do, and offers no re-enroll/delete without a proof.
        message = b.click_and_wait("#enroll-btn")
        assert message == f"“{user}” is already enrolled — unlock first, then re-enroll.", message
        assert b.page.get_attribute("#message", "data-kind") == "error"
        assert b.page.is_hidden("#proof")
        b.screenshot("1b-already-enrolled")
        b.close(server.url)

        # The owner saying the password (a take not used for enrollment): unlocked, said once, no scores
        # (explain is off); the page offers Re-enroll and Delete with the unlock's token.
        b = Browser(pw, fake_microphone([genuine], tmp_path / "genuine.wav"))
        b.open(server.url, user)
        verdict, answer = b.unlock()
        assert verdict == "Unlocked", (verdict, answer, b.page.inner_text("#result"))
        assert answer["unlocked"] and "word_score" not in answer
        assert b.page.get_attribute("#result", "data-outcome") == "unlocked"
        assert "both match" in b.page.inner_text("#why")
        assert b.page.is_hidden("#scores") and "0." not in b.page.inner_text("#result")
        assert b.page.inner_text("main").count("Unlocked") == 1
        assert b.page.is_visible("#proof") and b.page.is_visible("#delete-btn") and b.page.is_visible("#reenroll-btn")
        left = int(b.page.inner_text("#proof-expiry").split()[-2])
        assert 0 < left <= params.service.proof_token_seconds
        assert answer["token"] not in b.stored(), "the unlock token must stay in the page's memory"
        b.screenshot("2-unlocked")
        assert best_match(b.uploads()[0], [genuine]) > 0.95
        # Delete with the token: the request carries it as X-Unlock-Token, and it is spent.
        assert b.click_and_wait("#delete-btn") == (f"Deleted the enrollment of “{user}”. The name stays reserved: "
                                                   f"only the administrator can enroll it again.")
        assert [h.get("x-unlock-token") for h in b.headers("DELETE", f"/users/{user}")] == [answer["token"]]
        assert b.page.is_hidden("#proof")
        b.close(server.url)
        # The deleted name is retired; the same voice enrolls again under another name, from the source
        # files: the template the impostor below was chosen against.
        user = f"{user}-again"
        assert enroll_directly(server.url, user, enroll)["replaced"] is False

        # Another speaker saying the password: not recognised, with no hint which check failed; a
        # second failure locks the user (lockout_failures is 2 here) and the page says so in words.
        b = Browser(pw, fake_microphone([impostor], tmp_path / "impostor.wav"))
        b.open(server.url, user)
        verdict, answer = b.unlock()
        assert verdict == "Not recognised", (answer, b.page.inner_text("#result"))
        assert answer == {"unlocked": False, "user": user, "reason": "not recognised"}
        assert b.page.get_attribute("#result", "data-outcome") == "rejected"
        assert b.page.inner_text("#why") == "The password or the voice did not match the enrollment."
        assert b.page.is_hidden("#scores") and b.page.is_hidden("#proof")
        b.screenshot("3-rejected-other-speaker")
        assert b.unlock()[0] == "Not recognised"
        assert f"is now locked for {params.service.lockout_seconds:g} seconds" in b.page.inner_text("#why")
        assert b.page.is_disabled("#unlock-btn")
        b.close(server.url)

        # Locked out: even the owner is refused, with a plain sentence and the wait (Retry-After).
        b = Browser(pw, fake_microphone([genuine], tmp_path / "genuine.wav"))
        b.open(server.url, user)
        message = b.click_and_wait("#unlock-btn")
        assert message.startswith(f"“{user}” is locked after too many failed attempts. Try again in "), message
        assert b.headers("POST", "/unlock") == [] and b.page.is_hidden("#recording")  # said before recording
        wait = int(message.split("Try again in ")[1].split()[0])
        assert 0 < wait <= params.service.lockout_seconds
        assert b.page.get_attribute("#message", "data-kind") == "error"
        assert b.page.is_hidden("#result")
        b.screenshot("4-locked-out")
        # Another user on the same page is not locked; one never enrolled gets the same answer as a
        # wrong voice (the service does not say who is enrolled).
        b.page.fill("#user", "nobody")
        assert b.page.is_enabled("#unlock-btn")
        verdict, answer = b.unlock()
        assert verdict == "Not recognised" and answer == {"unlocked": False, "user": "nobody",
                                                          "reason": "not recognised"}
        b.screenshot("5-not-enrolled")
        b.close(server.url)

        # A microphone that hears nothing: the take gives up after listen_seconds and says so.
        silent = tmp_path / "silent.wav"
        sf.write(silent, np.zeros(FAKE_MIC_RATE * 2, dtype=np.float32), FAKE_MIC_RATE, subtype="PCM_16")
        b = Browser(pw, silent)
        b.open(server.url, "quiet")
        message = b.click_and_wait("#record-take")
        assert message.startswith(f"No voice was heard in {params.page.listen_seconds:g} s."), message
        assert b.page.locator("#takes li[data-recorded=true]").count() == 0
        b.screenshot("6-no-voice")
        b.close(server.url)


def test_reenroll_with_the_unlock_token(server: servers.Server, page_params: Path,
                                        speakers: tuple[list[Path], Path, Path], tmp_path: Path):
    """After an unlock the page's Re-enroll replaces the enrollment, sending the token once."""
    from playwright.sync_api import sync_playwright

    params = load_params(page_params)
    enroll, genuine, _ = speakers
    user = "owner2"
    enroll_directly(server.url, user, enroll)
    # The genuine take first (the unlock hears it), then the enrollment takes for the new takes: four
    # clips, so three consecutive takes are never one recording twice.
    mic = fake_microphone([genuine, *enroll], tmp_path / "reenroll.wav")
    with sync_playwright() as pw:
        b = Browser(pw, mic)
        b.open(server.url, user)
        assert b.page.is_hidden("#proof")
        verdict, answer = b.unlock()
        assert verdict == "Unlocked", (answer, b.page.inner_text("#result"))
        # No takes yet: the panel says to record them, and Re-enroll waits for them.
        assert b.page.is_disabled("#reenroll-btn")
        assert f"record {params.page.enroll_takes} new takes" in b.page.inner_text("#proof-hint")
        for _ in range(params.page.enroll_takes):
            b.click_and_wait("#record-take")
        assert b.page.is_enabled("#reenroll-btn")
        with b.page.expect_response(lambda r: r.url.endswith("/enroll")) as reply:
            message = b.click_and_wait("#reenroll-btn")
        assert reply.value.status == 200 and reply.value.json()["replaced"] is True, reply.value.text()
        assert message == (f"Re-enrolled “{user}” with {params.page.enroll_takes} recordings: the old enrollment "
                           f"is replaced."), message
        assert [h.get("x-unlock-token") for h in b.headers("POST", "/enroll")] == [answer["token"]]
        assert b.page.is_hidden("#proof"), "a spent token must not be offered again"
        assert answer["token"] not in b.stored()
        b.screenshot("7-re-enrolled")
        # The plain Enroll button sends no token: refused with the plain sentence.
        assert b.click_and_wait("#enroll-btn") == f"“{user}” is already enrolled — unlock first, then re-enroll."
        b.close(server.url)


def test_liveness_challenge_in_a_real_browser(live_server: servers.Server, page_params: Path,
                                              speakers: tuple[list[Path], Path, Path], tmp_path: Path):
    """With liveness on, Unlock asks for a challenge, shows its word, records the password and one take
    for the word, and sends them in one /unlock; explain mode shows the scores and what was heard."""
    import httpx
    from playwright.sync_api import sync_playwright

    enroll, genuine, _ = speakers
    user = "live"
    enroll_directly(live_server.url, user, enroll)
    config = httpx.get(f"{live_server.url}/app/config.json").json()
    assert (config["liveness"], config["challenge_words"], config["explain"]) == ("challenge", 1, True)
    with sync_playwright() as pw:
        # The microphone only ever plays the password: the challenge take repeats it, so the service
        # must refuse (not the asked word, and the same recording twice) — whatever word it draws.
        b = Browser(pw, fake_microphone([genuine], tmp_path / "genuine.wav"))
        b.open(live_server.url, user)
        with b.page.expect_response(lambda r: r.url.endswith("/challenge")) as asked, \
                b.page.expect_response(lambda r: r.url.endswith("/unlock"), timeout=60_000) as answered:
            b.page.click("#unlock-btn")
            b.page.wait_for_function("() => document.getElementById('message').textContent.startsWith("
                                     "'Say your password, then: ')", timeout=10_000)
            challenge = asked.value.json()
            word = challenge["words"][0]
            assert b.page.inner_text("#message") == f"Say your password, then: {word}"
            b.page.wait_for_function(f"() => document.getElementById('prompt').textContent === 'Now say “{word}”'"
                                     " && !document.getElementById('recording').hidden", timeout=20_000)
            b.screenshot("8-challenge-word")
            b.page.wait_for_selector("body[data-busy=false]", timeout=60_000)
            assert b.page.inner_text("#message") == "", b.page.inner_text("#message")
        answer = answered.value.json()
        assert answered.value.status == 200, answer
        assert b.page.inner_text("#verdict") == ("Unlocked" if answer["unlocked"] else "Not recognised"), answer
        assert not answer["unlocked"] or word == load_params(page_params).owner.password, answer
        assert answer["challenge_1"].startswith(f"asked {word}, heard ")
        # One /unlock carried the password take, one take for the word, and the challenge's id.
        (form,) = b.forms("/unlock")
        assert [name for name, _ in form] == ["user", "file", "challenge_files", "challenge"]
        assert dict(form)["challenge"] == challenge["challenge"]
        takes = [v for _, v in form if isinstance(v, bytes)]
        assert all(best_match(t, [genuine]) > 0.95 for t in takes), [best_match(t, [genuine]) for t in takes]
        # Explain mode: the scores, the reason and the challenge as the service heard it.
        assert b.page.is_visible("#scores")
        for cell in ("#word-score", "#word-threshold", "#speaker-score", "#speaker-threshold"):
            assert np.isfinite(float(b.page.inner_text(cell))), cell
        assert f"Challenge word 1: asked {word}, heard" in b.page.inner_text("#detail")
        assert answer["reason_detail"] in b.page.inner_text("#detail")
        b.screenshot("9-challenge-refused")
        b.close(live_server.url)
