"""A small espeak-ng synthesis server: loads libespeak-ng once, renders each request in a forked child.

Why: starting the `espeak-ng` program costs ~9 ms of a ~15 ms corpus take (it loads its voice and
phoneme data every time): about a minute of the corpus stage on 2 cores. Rendering in-process takes
0.7 ms, but espeak-ng carries state from one utterance to the next — the same request rendered twice
in one process gives different samples — so the corpus would depend on which takes a worker happened
to render before. A child forked from a process that has loaded espeak-ng but never spoken starts
from exactly the state a fresh `espeak-ng` program has: the same samples byte for byte
(tests/test_synth.py::test_the_espeak_server_renders_what_the_espeak_ng_program_does).

Selecting the voice is most of a take's cost (4.3 of 5.2 ms: it loads the voice and its language's
dictionary), and the corpus asks for one voice many times in a row (a speaker's takes). So the server
forks a *voice process* per voice: a child of the never-spoken server that selects that voice, as the
program does first, and then forks one child per take, which sets rate and pitch and speaks. The
server keeps the voice process of the last voice asked for and replaces it when another is asked for.

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


def select_voice(lib: ctypes.CDLL, voice: str) -> bool:
    """Select `voice` as the program does: a voice file by that name, else the name read as a language
    (which is how `en-gb+f1` comes to sound exactly like `en-gb`: the variant is dropped;
    synth.check_timbres). False when neither exists."""
    return (lib.espeak_SetVoiceByName(voice.encode()) == 0
            or lib.espeak_SetVoiceByProperties(ctypes.byref(VoiceSelect(languages=voice.encode()))) == 0)


def render(lib: ctypes.CDLL, text: str, pitch: int, speed: int) -> bytes | None:
    """Speak `text` in the selected voice (in a fresh child only: espeak-ng keeps state between utterances)."""
    samples: list[bytes] = []

    @SynthCallback
    def collect(wav, count, _events):  # type: ignore[no-untyped-def]
        if wav and count > 0:
            samples.append(ctypes.string_at(wav, count * 2))
        return 0

    lib.espeak_SetSynthCallback(collect)
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


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _read_exactly(fd: int, n: int) -> bytes:
    chunks, left = [], n
    while left and (chunk := os.read(fd, left)):
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _voice_process(lib: ctypes.CDLL, voice: str, requests: int, answers: int) -> None:
    """Select `voice`, then answer each request (JSON `[text, pitch, speed]` lines on fd `requests`) with
    a status, a byte count and the PCM on fd `answers`, each take spoken by a child of its own."""
    selected = select_voice(lib, voice)
    with os.fdopen(requests, "rb") as lines:
        for line in lines:
            text, pitch, speed = json.loads(line)
            pcm = b""
            if selected:
                read_end, write_end = os.pipe()
                pid = os.fork()
                if pid == 0:  # the child speaks once, from the state of a process that never spoke
                    code = 1
                    try:
                        os.close(read_end)
                        pcm = render(lib, text, int(pitch), int(speed)) or b""
                        _write_all(write_end, pcm)
                        code = 0 if pcm else 1
                    finally:  # never return into this loop: the child is not a voice process
                        os._exit(code)
                os.close(write_end)
                pcm = _read_all(read_end)
                os.close(read_end)
                _, status = os.waitpid(pid, 0)
                pcm = pcm if status == 0 else b""
            _write_all(answers, struct.pack("<iI", 0 if pcm else 1, len(pcm)) + pcm)


class _VoiceProcess:
    """The server's end of one voice process."""

    def __init__(self, lib: ctypes.CDLL, voice: str) -> None:
        self.voice = voice
        request_read, self.requests = os.pipe()
        self.answers, answer_write = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:
            code = 1
            try:
                os.close(self.requests)
                os.close(self.answers)
                _voice_process(lib, voice, request_read, answer_write)
                code = 0
            finally:  # never return into the server's loop
                os._exit(code)
        os.close(request_read)
        os.close(answer_write)

    def speak(self, text: str, pitch: int, speed: int) -> tuple[int, bytes]:
        """(0, PCM) or (1, b""); (1, b"") too when the voice process is gone (the server starts another)."""
        try:
            _write_all(self.requests, json.dumps([text, int(pitch), int(speed)]).encode() + b"\n")
        except OSError:
            return 1, b""
        header = _read_exactly(self.answers, 8)
        if len(header) < 8:
            return 1, b""
        status, size = struct.unpack("<iI", header)
        pcm = _read_exactly(self.answers, size)
        return (status, pcm) if len(pcm) == size else (1, b"")

    def close(self) -> None:
        os.close(self.requests)  # its loop ends
        os.close(self.answers)
        os.waitpid(self.pid, 0)


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
    # espeak-ng's breathy voices (variants with `breath`: f2, f5, sandro…) draw their noise from the C
    # library's rand(), and loading the library can draw from it first: libpulse, linked in through
    # libpcaudio, names a new runtime directory (/tmp/pulse-…) with rand() when none exists — on a
    # machine's first run, or after /tmp was cleared. So the samples of a breathy take depended on the
    # machine's history: the corpus's babble background came out one way on a machine's first
    # `make repro` and another way on every later run. Re-seeding as a fresh C program starts (seed 1)
    # makes every voice process, and every take forked from it, start from the same draw.
    ctypes.CDLL(None).srand(1)
    current: _VoiceProcess | None = None
    for line in sys.stdin.buffer:
        text, voice, pitch, speed = json.loads(line)
        if current is None or current.voice != voice:
            if current is not None:
                current.close()
            current = _VoiceProcess(lib, voice)  # forked from this process, which never selected a voice
        status, pcm = current.speak(text, pitch, speed)
        if status != 0:  # one more try from a fresh voice process, in case this one was killed
            current.close()
            current = _VoiceProcess(lib, voice)
            status, pcm = current.speak(text, pitch, speed)
        out.write(struct.pack("<iI", status, len(pcm)) + pcm)  # a failure (status 1) carries no samples
        out.flush()
    if current is not None:
        current.close()


if __name__ == "__main__":
    serve()
