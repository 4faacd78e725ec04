"""What a stage prints: voicelock's own progress, not other libraries' housekeeping."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_a_stage_shows_voicelocks_info_and_other_libraries_warnings_only():
    # A fresh interpreter: logging is configured once per process, as in a DVC stage.
    script = textwrap.dedent("""
        import logging
        from voicelock.cli import run_stage

        def stage(params):
            logging.getLogger("great_expectations._docs_decorators").info("registry housekeeping")
            logging.getLogger("great_expectations.core").warning("a library's warning")
            logging.getLogger("voicelock.evaluation").info("the stage's own progress")

        run_stage(stage, [])
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "INFO voicelock.evaluation: the stage's own progress" in result.stderr
    assert "WARNING great_expectations.core: a library's warning" in result.stderr
    assert "registry housekeeping" not in result.stderr
