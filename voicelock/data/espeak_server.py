"""A small espeak-ng synthesis server: loads libespeak-ng once, renders each request in a forked child.

Why: starting the `espeak-ng` program costs ~9 ms of a ~15 ms corpus take (it loads its voice and
phoneme data every time): about a minute of the corpus stage on 2 cores. Rendering in-process takes
0.7 ms, but espeak-ng carries state from one utterance to the next — the same request rendered twice
in one process gives different samples — so the corpus would depend on which takes a worker happened
to render before. A child forked from a process that has loaded espeak-ng but never spoken starts
from exactly the state a fresh `espeak-ng` program has: the same samples byte for byte
(tests/test_synth.py::test_the_espeak_server_renders_what_the_espeak_ng_program_does), ~5 ms a take.

Started by voicelock/data/synth.py as `python -S espeak_server.py`; standard library only, so the
process stays small and forks fast. It exits when its stdin closes. Protocol: it first writes the
library's sample rate (4 bytes, little-endian; 0 when the library or its voice data cannot be loaded), then answers
each request line on stdin — JSON `[text, voice, pitch, speed]` — with a status (4 bytes, 0 = ok), a
byte count (4 bytes) and that many bytes of 16-bit mono PCM.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import struct
import sys

AUDIO_OUTPUT_SYNCHRONOUS = 2
INITIALIZE_DONT_EXIT = 0x8000  # missing voice data: return an error instead of exit(1) inside the library
RATE, PITCH = 1, 3  # espeak_PARAMETER
# The `espeak-ng` program's own flags: text in the locale's encoding (UTF-8), [[phonemes]] allowed,
# a pause at the end.
CHARS_AUTO, PHONEMES, ENDPAUSE = 0, 0x100, 0x1000


class VoiceSelect(ctypes.Structure):
    """espeak_VOICE, for selecting a voice by language as the program falls back to."""

    _fields_ = [("name", ctypes.c_char_p), ("languages", ctypes.c_char_p), ("identifier", ctypes.c_char_p),
                ("gender", ctypes.c_ubyte), ("age", ctypes.c_ubyte), ("variant", ctypes.c_ubyte),
                ("xx1", ctypes.c_ubyte), ("score", ctypes.c_int), ("spare", ctypes.c_void_p)]


SynthCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


def render(lib: ctypes.CDLL, text: str, voice: str, pitch: int, speed: int) -> bytes | None:
    """Speak `text` (in a fresh child only: espeak-ng keeps state between utterances)."""
    samples: list[bytes] = []

    @SynthCallback
    def collect(wav, count, _events):  # type: ignore[no-untyped-def]
        if wav and count > 0:
            samples.append(ctypes.string_at(wav, count * 2))
        return 0

    lib.espeak_SetSynthCallback(collect)
    # As the program does: a voice file by that name, else the name read as a language (which is how
    # `en-gb+f1` comes to sound exactly like `en-gb`: the variant is dropped; synth.check_timbres).
    if lib.espeak_SetVoiceByName(voice.encode()) != 0 and \
            lib.espeak_SetVoiceByProperties(ctypes.byref(VoiceSelect(languages=voice.encode()))) != 0:
        return None
    lib.espeak_SetParameter(RATE, speed, 0)
    lib.espeak_SetParameter(PITCH, pitch, 0)
    data = text.encode()
    if lib.espeak_Synth(data, len(data) + 1, 0, 0, 0, CHARS_AUTO | PHONEMES | ENDPAUSE, None, None) != 0:
        return None
    lib.espeak_Synchronize()
    return b"".join(samples)


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 1 << 16):
        chunks.append(chunk)
    return b"".join(chunks)


def serve() -> None:
    # Ctrl-C reaches the whole process group: the client stops, and closing our stdin ends this loop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    out = sys.stdout.buffer
    try:
        lib = ctypes.CDLL("libespeak-ng.so.1")
        rate = lib.espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 0, None, INITIALIZE_DONT_EXIT)
    except OSError:
        rate = 0
    out.write(struct.pack("<i", max(rate, 0)))
    out.flush()
    if rate <= 0:
        return
    for line in sys.stdin.buffer:
        text, voice, pitch, speed = json.loads(line)
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child speaks once, from the state of a process that never spoke
            code = 1
            try:
                os.close(read_end)
                pcm = render(lib, text, voice, int(pitch), int(speed))
                view = memoryview(pcm or b"")
                while view:
                    view = view[os.write(write_end, view):]
                code = 0 if pcm else 1
            finally:  # never return into this loop: the child is not a server
                os._exit(code)
        os.close(write_end)
        pcm = _read_all(read_end)
        os.close(read_end)
        _, status = os.waitpid(pid, 0)
        ok = status == 0 and pcm
        out.write(struct.pack("<iI", 0 if ok else 1, len(pcm) if ok else 0))
        if ok:
            out.write(pcm)
        out.flush()


if __name__ == "__main__":
    serve()
