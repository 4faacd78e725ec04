"""The network an unlock runs (ONNX Runtime) is the release's network, or the release does not load."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from voicelock import served_network
from voicelock.enrollment import Unlocker, _check_clips
from voicelock.errors import VoicelockError
from voicelock.params import Params
from voicelock.release import Release


def _clips(rate: int, seconds: list[float], seed: int = 7) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(0.2 * np.hanning(int(s * rate)) * rng.standard_normal(int(s * rate))).astype(np.float32)
            for s in seconds]


def test_the_served_network_embeds_as_the_released_network(trained: Params):
    """The release's own PyTorch network (BatchNorms unfolded, as the evaluation embeds) and what an
    unlock runs agree on clips of every length, alone and batched together."""
    lock = Unlocker(trained.evaluate.out_dir, trained.enroll)
    network = Release.load(trained.evaluate.out_dir, "cpu").model.eval()
    clips = _clips(lock.sample_rate, [0.15, 0.4, 0.8, 1.0, 1.3, 2.5])
    feats, frames = lock.extractor.from_arrays(clips)
    assert len(set(frames.tolist())) > 2  # several frame counts, not one padded width
    with torch.no_grad():
        out = network(feats, frames)
    empty = lock.embed_here([])  # nothing to embed is no error (the graph alone cannot reshape it)
    assert empty[0].shape == (0, out.word.shape[1]) and empty[1].shape == (0, out.speaker.shape[1])
    alone = [lock.embed_here([c]) for c in clips]
    for got in (lock.embed_here(clips), tuple(np.concatenate(part) for part in zip(*alone, strict=True))):
        np.testing.assert_allclose(got[0], out.word.numpy(), atol=1e-5)
        np.testing.assert_allclose(got[1], out.speaker.numpy(), atol=1e-5)


def test_a_graph_that_is_not_the_network_refuses_to_load(trained: Params, monkeypatch: pytest.MonkeyPatch):
    """A trace that computed something else (here: another network of the same shape) is caught by the
    load check, before any template or unlock could be scored by it."""
    other = Release.load(trained.evaluate.out_dir, "cpu").model.eval()
    with torch.no_grad():  # the same network but for one layer's weights, slightly off
        other.blocks[0].mix.weight.mul_(1.01)
    trace = served_network._trace
    monkeypatch.setattr(served_network, "_GRAPHS", {})
    monkeypatch.setattr(served_network, "_trace", lambda model, f, t: trace(other, f, t))
    with pytest.raises(VoicelockError, match="ONNX graph differs from the network"):
        Unlocker(trained.evaluate.out_dir, trained.enroll)


def test_a_cached_graph_is_checked_all_the_same(trained: Params, monkeypatch: pytest.MonkeyPatch):
    """A graph found in the process's cache under the release's key (here: another network's) must not
    skip the check: the key says which network it should be, the check says which it is."""
    lock = Unlocker(trained.evaluate.out_dir, trained.enroll)  # puts the release's graph in the cache
    other = Release.load(trained.evaluate.out_dir, "cpu").model.eval()
    with torch.no_grad():
        other.blocks[0].conv.weight.mul_(0.98)
    wrong = served_network._trace(other, lock.extractor.n_features, lock.extractor.frames)
    cache = {key: wrong for key in served_network._GRAPHS}
    assert cache  # the release's graph was cached under its key, now another's is
    monkeypatch.setattr(served_network, "_GRAPHS", cache)
    with pytest.raises(VoicelockError, match="ONNX graph differs from the network"):
        Unlocker(trained.evaluate.out_dir, trained.enroll)


@pytest.mark.parametrize("output", [0, 1])
def test_a_graph_answering_nan_for_one_clip_refuses_to_load(trained: Params, monkeypatch: pytest.MonkeyPatch,
                                                            output: int):
    """NaN in any output of the check — the word or the speaker embedding, of a full-length clip scored
    alone — refuses the release (Python's max() would drop a NaN that does not come first)."""
    run = served_network.ServedNetwork.__call__

    def nan_for_a_long_clip_alone(self, feats: torch.Tensor, frames: torch.Tensor):
        out = [np.array(a) for a in run(self, feats, frames)]
        if len(frames) == 1 and int(frames[0]) == int(check_frames[-1]):
            out[output][0, 0] = np.nan
        return tuple(out)

    lock = Unlocker(trained.evaluate.out_dir, trained.enroll)
    check_frames = lock.extractor.from_arrays(_check_clips(lock.sample_rate))[1]
    monkeypatch.setattr(served_network.ServedNetwork, "__call__", nan_for_a_long_clip_alone)
    with pytest.raises(VoicelockError, match="ONNX graph differs from the network"):
        Unlocker(trained.evaluate.out_dir, trained.enroll)


def test_the_served_network_runs_on_torchs_thread_count(trained: Params):
    """`limit_threads` (voicelock/runtime.py) stays the one knob: a service worker set to one thread
    must not get an ONNX Runtime pool on every core."""
    lock = Unlocker(trained.evaluate.out_dir, trained.enroll)
    before = torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            lock.embed_here(_clips(lock.sample_rate, [0.5]))
            assert lock.network._session().get_session_options().intra_op_num_threads == threads
    finally:
        torch.set_num_threads(before)
