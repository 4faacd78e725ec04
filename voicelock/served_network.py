"""The network as an unlock runs it: the release's network exported to ONNX, run by ONNX Runtime.

Why not PyTorch, which trains it: an unlock is a batch of one or two clips (the take and its
band-limited replay view), where each of PyTorch's eager operator calls costs about as much as its
arithmetic. On the README's AMD EPYC, one thread, the shipped network: 2.8 → 1.1 ms for one clip,
3.9 → 2.0 ms for the take and its view, 20.7 → 13.8 ms for the 14 copies an accepted take is
remembered by (`bench/inference.py` prints the ratio in one run). Training and the evaluate stage keep
PyTorch: at their batches of 128 the graph gains 1.1-1.3x, not worth a second engine in the pipeline.

The graph is traced from the very network the release loads (`inference_copy`, BatchNorms folded)
whenever an `Unlocker` opens it, so it can never be older or newer than the weights; and before it
decides anything it is run beside that network on clips of several lengths, at a batch of one and
of several. A graph that computes something else (a Python branch the trace froze the wrong way in
some future network) refuses to load instead of scoring.
"""

from __future__ import annotations

import io
import threading
import warnings

import numpy as np
import onnxruntime as ort
import torch

from voicelock.errors import VoicelockError
from voicelock.model.network import VoiceLockNet

# The most a graph may differ from the network it was traced from on the load check, per embedding
# component (unit-length vectors; float rounding is ~3e-7). A replay threshold sits ~1e-3 from
# genuine takes, so 1e-4 is well inside what no decision can notice.
AGREEMENT = 1e-4

# Traced graphs by what they compute (the weights, feature parameters and the network's build): tracing
# costs ~1 s, and a process (tests, the service's API and embedder workers) opens the same release more
# than once. Only a few are kept; a graph found here is checked against the network all the same.
_GRAPHS: dict[str, bytes] = {}
_GRAPHS_KEPT = 4
_GRAPHS_LOCK = threading.Lock()


class _Embeddings(torch.nn.Module):
    """The network's two embeddings alone: what a fingerprint and a score need (the logits train)."""

    def __init__(self, model: VoiceLockNet):
        super().__init__()
        self.model = model

    def forward(self, feats: torch.Tensor, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.model(feats, frames)
        return out.word, out.speaker


def _trace(model: VoiceLockNet, n_features: int, n_frames: int) -> bytes:
    """The network as an ONNX graph of any batch size (features are always `n_frames` wide)."""
    # Two rows of different lengths: nothing in the trace may take one clip, or one length, for granted.
    feats = torch.zeros(2, n_features, n_frames)
    frames = torch.tensor([n_frames, max(n_frames // 2, 1)])
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        # The TorchScript exporter warns that it is deprecated (torch is pinned: it is there) and that
        # Python values become constants in the trace (the load check below proves the graph instead).
        warnings.simplefilter("ignore")
        torch.onnx.export(_Embeddings(model).eval(), (feats, frames), buf, input_names=["features", "frames"],
                          output_names=["word", "speaker"], opset_version=17, dynamo=False,
                          dynamic_axes={"features": {0: "batch"}, "frames": {0: "batch"}, "word": {0: "batch"},
                                        "speaker": {0: "batch"}})
    return buf.getvalue()


class ServedNetwork:
    """`model`'s word and speaker embeddings from (B, F, T) features and (B,) frame counts, by ONNX Runtime.

    Runs on as many threads as torch is set to (`voicelock.runtime.limit_threads` stays the one
    knob): one session per thread count, made on first use. Thread-safe.
    """

    def __init__(self, model: VoiceLockNet, build: str, checks: tuple[torch.Tensor, torch.Tensor]):
        feats, frames = checks
        # Traced under the lock: the exporter keeps process-wide state (and so do `warnings` filters).
        with _GRAPHS_LOCK:
            graph = _GRAPHS.get(build)
            if graph is None:
                graph = _trace(model, feats.shape[1], feats.shape[2])
                if len(_GRAPHS) >= _GRAPHS_KEPT:
                    _GRAPHS.clear()
                _GRAPHS[build] = graph
        self._graph = graph
        self._sessions: dict[int, ort.InferenceSession] = {}
        self._lock = threading.Lock()
        self.dims = self._check(model, feats, frames)  # (word, speaker) embedding sizes, as served

    def _session(self) -> ort.InferenceSession:
        threads = torch.get_num_threads()
        found = self._sessions.get(threads)
        if found is None:
            options = ort.SessionOptions()
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
            options.log_severity_level = 3  # errors only: its optimiser's notes are no user's business
            # Idle pool threads sleep instead of spinning: a service worker must not burn the core the
            # next request (or another worker) needs.
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            with self._lock:  # made once per thread count, however many threads miss it at once
                found = self._sessions.get(threads)
                if found is None:
                    found = ort.InferenceSession(self._graph, options, providers=["CPUExecutionProvider"])
                    self._sessions[threads] = found
        return found

    def __call__(self, feats: torch.Tensor, frames: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        if len(frames) == 0:  # the graph cannot reshape an empty batch (PyTorch could): nothing to embed
            return np.zeros((0, self.dims[0]), np.float32), np.zeros((0, self.dims[1]), np.float32)
        word, speaker = self._session().run(None, {"features": feats.numpy(), "frames": frames.numpy()})
        return word, speaker

    def _check(self, model: VoiceLockNet, feats: torch.Tensor, frames: torch.Tensor) -> tuple[int, int]:
        """Refuse a graph that differs from `model` on the check clips, one at a time and together;
        return the embeddings' sizes it served (word, speaker)."""
        with torch.no_grad():
            out = model(feats, frames)
        want = (out.word.numpy(), out.speaker.numpy())
        together = self(feats, frames)
        alone = [self(feats[i:i + 1], frames[i:i + 1]) for i in range(len(feats))]
        got = (together, (np.concatenate([a[0] for a in alone]), np.concatenate([a[1] for a in alone])))
        # np.max, not max(): the built-in drops a NaN that is not first, and a NaN anywhere must refuse.
        worst = float(np.max([np.max(np.abs(g - w)) if g.shape == w.shape else np.inf
                              for pair in got for g, w in zip(pair, want, strict=True)]))
        if not worst <= AGREEMENT:
            raise VoicelockError(f"the network's ONNX graph differs from the network by {worst:.2g} (at most "
                                 f"{AGREEMENT:g}): this release cannot be served — report it with the model folder")
        return want[0].shape[1], want[1].shape[1]
