"""Make the README's pictures: the browser page (from the page's end-to-end test) and the Prefect UI.

    .venv/bin/python scripts/screenshots.py

1. The page: `tests/test_browser.py` records each outcome (enrolled, unlocked, refused, locked out,
   challenge) in a real Chromium with a fake microphone and saves a screenshot under
   test-output/browser/ (run by `make test`); the ones the README shows are copied to docs/images/.
2. The Prefect UI: a throw-away `prefect server` on 127.0.0.1, the two deployments registered with a
   process work pool (`pipelines.deploy`, as on a real server), and headless Chromium's screenshots of
   the deployments and the work pool pages.

The DVC plots need no script: the evaluate stage writes them as images under plots/ (DVC image plots),
and the README shows those files.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tests.servers import BIN, free_port, start, stop, wait_healthy  # noqa: E402 — the tests' server helpers

OUT = REPO / "docs" / "images"
PAGE_SHOTS = {"1-enrolled.png": "page-enrolled.png", "2-unlocked.png": "page-unlocked.png",
              "3-rejected-other-speaker.png": "page-rejected.png", "8-challenge-word.png": "page-challenge.png"}
CHROMIUM = "/usr/bin/chromium"


def page_shots(source: Path = REPO / "test-output" / "browser") -> list[Path]:
    missing = [name for name in PAGE_SHOTS if not (source / name).exists()]
    if missing:
        sys.exit(f"{source}: no {', '.join(missing)} — run `make test` (tests/test_browser.py makes them) first")
    return [Path(shutil.copy(source / name, OUT / target)) for name, target in PAGE_SHOTS.items()]


def prefect_shots() -> list[Path]:
    from playwright.sync_api import sync_playwright

    home = Path(tempfile.mkdtemp(prefix="voicelock-prefect-ui-"))
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_API_URL": api, "PREFECT_SERVER_ANALYTICS_ENABLED":
           "false", "PREFECT_UI_API_URL": api, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    log = home / "server.log"
    server = start([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)], log, env=env)
    shots = []
    try:
        wait_healthy(f"{api}/health", server, log, timeout_s=120)
        for cmd in ([str(BIN / "prefect"), "work-pool", "create", "voicelock", "--type", "process"],
                    [sys.executable, "-m", "pipelines.deploy", "--pool", "voicelock", "--repo", str(REPO)]):
            subprocess.run(cmd, cwd=REPO, env=env, check=True, capture_output=True, timeout=180)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                         args=["--no-sandbox", "--disable-gpu", "--no-first-run"])
            page = browser.new_page(viewport={"width": 1400, "height": 800})
            for route, name, text in (("deployments", "prefect-deployments.png", "weekly-retrain"),
                                      ("work-pools/work-pool/voicelock", "prefect-work-pool.png", "voicelock")):
                page.goto(f"http://127.0.0.1:{port}/{route}")
                page.get_by_text(text).first.wait_for(timeout=60_000)
                page.wait_for_timeout(1500)  # let the lists finish drawing
                page.screenshot(path=str(OUT / name))
                shots.append(OUT / name)
            browser.close()
    finally:
        stop(server)
        shutil.rmtree(home, ignore_errors=True)
    return shots


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for path in page_shots() + prefect_shots():
        print(f"wrote {path.relative_to(REPO)}")


if __name__ == "__main__":
    main()
