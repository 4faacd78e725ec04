"""The `folder` source: a local corpus is validated before it is taken, then linked in atomically."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from voicelock.cli import main as cli_main
from voicelock.data.acquire import import_folder
from voicelock.data.layout import scan_corpus
from voicelock.errors import VoicelockError


def test_import_folder_keeps_layout_and_lists(tiny_corpus: Path, tmp_path: Path):
    target = import_folder(tiny_corpus, tmp_path / "raw", 16000)
    assert [c.path for c in scan_corpus(target)] == [c.path for c in scan_corpus(tiny_corpus)]
    assert (target / "testing_list.txt").read_text() == (tiny_corpus / "testing_list.txt").read_text()
    assert (target / "_background_noise_").is_dir()


def test_import_refuses_wrong_rate_and_leaves_nothing(tiny_corpus: Path, tmp_path: Path):
    source = Path(shutil.copytree(tiny_corpus, tmp_path / "src"))
    bad = sorted((source / "no").glob("*.wav"))[0]
    sf.write(bad, np.zeros(44100), 44100)
    with pytest.raises(VoicelockError, match=f"no/{bad.name}: sample rate 44100 Hz"):
        import_folder(source, tmp_path / "raw", 16000)
    assert not (tmp_path / "raw").exists()
    with pytest.raises(VoicelockError, match="data.folder.path is empty"):
        import_folder("", tmp_path / "raw", 16000)


def test_check_data_command(tiny_corpus: Path, tiny_params_path: Path, tmp_path: Path, capsys):
    cli_main(["--params", str(tiny_params_path), "check-data", str(tiny_corpus)])
    assert "clips in Speech Commands layout" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["--params", str(tiny_params_path), "check-data", str(tmp_path / "missing")])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.startswith("error: ")
