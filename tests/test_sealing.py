"""Sealed enrollment recordings: what a stolen database or a wrong key yields."""

from __future__ import annotations

import base64

import numpy as np
import pytest
from cryptography.fernet import Fernet

from voicelock.errors import VoicelockError
from voicelock.sealing import Sealer


def test_sealed_recordings_open_only_with_their_key_and_unchanged():
    clips = [np.sin(np.linspace(0, 300, 16000)).astype(np.float32) * 0.5, np.zeros(8000, np.float32)]
    sealer = Sealer(Fernet.generate_key().decode(), "VOICELOCK_TAKES_KEY")
    blob = sealer.seal(clips, 16000)
    pcm = np.round(clips[0] * 32767).astype(np.int16).tobytes()[2000:2064]  # 64 bytes of the sealed audio
    assert pcm not in base64.urlsafe_b64decode(blob) and pcm not in blob  # ciphertext, not audio
    opened, rate = sealer.open(blob)
    assert rate == 16000 and [len(c) for c in opened] == [16000, 8000]
    assert np.allclose(opened[0], clips[0], atol=1 / 32767)  # 16-bit PCM
    other = Sealer(Fernet.generate_key().decode(), "VOICELOCK_TAKES_KEY")
    with pytest.raises(VoicelockError, match="cannot be opened with the key in VOICELOCK_TAKES_KEY"):
        other.open(blob)
    tampered = bytearray(blob)
    tampered[len(tampered) // 2] ^= 1
    with pytest.raises(VoicelockError, match="cannot be opened"):
        sealer.open(bytes(tampered))


def test_a_malformed_key_names_its_variable_and_how_to_make_one():
    with pytest.raises(VoicelockError, match=r"VOICELOCK_TAKES_KEY: not a Fernet key .*generate_key"):
        Sealer("hunter2", "VOICELOCK_TAKES_KEY")
    assert Sealer.from_environment("VOICELOCK_TAKES_KEY", {}) is None
    assert Sealer.from_environment("VOICELOCK_TAKES_KEY", {"VOICELOCK_TAKES_KEY": ""}) is None
