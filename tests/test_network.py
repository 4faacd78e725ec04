"""The network, triplet mining, batch sampling and feature augmentation, on hand-made inputs."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
import torch
from pydantic import ValidationError

from tests.conftest import REPO
from voicelock.model.augment import FeatureAugmenter
from voicelock.model.checkpoint import load_checkpoint, save_checkpoint
from voicelock.model.network import PCEN, VoiceLockNet, at_level, count_parameters, inference_copy
from voicelock.model.one_pole import decay_matrix
from voicelock.model.sampling import SpeakerWordBatches
from voicelock.model.triplets import distinct_sample, mine, pairwise_distances, triplet_loss
from voicelock.params import ModelParams, load_params

PARAMS = load_params(REPO / "params.yaml")


# The shipped network (a 2-D front), the one before it (no front: checkpoints from before the front
# load as it), and heads pooling several blocks.
@pytest.mark.parametrize("variant", [{}, {"front_channels": 0, "stem_kernel": 5, "stem_stride": 2},
                                     {"pooled_blocks": 3}, {"input_norm": "pcen"}, {"input_norm": "log+pcen"},
                                     {"input_norm": "log+pcen", "front_channels": 0}],
                         ids=["shipped", "no-front", "pooled-blocks", "pcen-input", "log-and-pcen-input",
                              "log-and-pcen-no-front"])
def test_default_network_is_small_and_length_independent(variant: dict):
    model = VoiceLockNet(64, PARAMS.model.model_copy(update=variant)).eval()
    assert count_parameters(model) <= 1_500_000
    x = torch.randn(3, 64, 101) * 10 - 40
    frames = torch.tensor([101, 61, 30])  # odd and even: the front and the stem halve them
    out = model(x, frames)
    assert out.word.shape == (3, PARAMS.model.word_embedding)
    assert out.speaker.shape == (3, PARAMS.model.speaker_embedding)
    torch.testing.assert_close(out.word.norm(dim=1), torch.ones(3))
    # Padding past the spoken frames, whatever its value or length, does not change the embedding.
    longer = torch.cat([x, torch.full((3, 64, 40), -80.0)], dim=2)
    longer[1, :, 61:] = 123.0
    again = model(longer, frames)
    torch.testing.assert_close(again.speaker, out.speaker, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(again.word, out.word, atol=1e-5, rtol=1e-4)
    for i, n in enumerate(frames.tolist()):
        # Each clip alone, cut to its spoken frames, embeds as it does padded in the batch: a frame
        # count that ran past the spoken frames anywhere would pool a padding frame here and not there.
        alone = model(x[i:i + 1, :, :n], frames[i:i + 1])
        torch.testing.assert_close(alone.speaker, out.speaker[i:i + 1], atol=1e-5, rtol=1e-4)
        # …and the last spoken frame counts: a count that fell short would ignore it.
        changed = x[i:i + 1, :, :n].clone()
        changed[..., n - 1] += 30.0
        assert not torch.allclose(model(changed, frames[i:i + 1]).speaker, alone.speaker, atol=1e-4)


@pytest.mark.parametrize("variant", [{}, {"front_channels": 0, "stem_kernel": 5, "stem_stride": 2}],
                         ids=["shipped", "no-front"])
def test_the_inference_copy_embeds_one_clip_or_several_as_the_trained_network_does(variant: dict):
    """The copy an unlock runs (BatchNorms folded, dilated convolutions as one product for a single
    clip) must be the same function as the network that was evaluated."""
    torch.manual_seed(0)
    model = VoiceLockNet(64, PARAMS.model.model_copy(update=variant))
    x = torch.randn(8, 64, 101) * 10 - 40
    frames = torch.tensor([101, 61, 30, 101, 90, 80, 70, 45])
    with torch.no_grad():
        for _ in range(3):  # running statistics far from BatchNorm's initial 0 / 1, so a fold shows
            model(x * 2 + 5, frames)
        for bn in (m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)):
            bn.weight.uniform_(0.5, 2.0)
            bn.bias.uniform_(-1.0, 1.0)
    model.eval()
    fused = inference_copy(model)
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in (*fused.blocks.modules(),
                                                                                 *fused.stem.modules()))
    with torch.no_grad():
        want = model(x[:3], frames[:3])  # a batch: torch's own convolutions throughout
        for batch in (slice(0, 1), slice(1, 2), slice(2, 3), slice(0, 3)):  # one clip: the single-clip product
            got = fused(x[batch], frames[batch])
            torch.testing.assert_close(got.word, want.word[batch], atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(got.speaker, want.speaker[batch], atol=1e-5, rtol=1e-4)
    assert model.training is False and any(isinstance(m, torch.nn.BatchNorm1d) for m in model.blocks.modules())


def test_pcen_flattens_a_steady_background_and_keeps_the_voice_above_it():
    """What PCEN is for: a steady background at any level comes out as (nearly) the same small constant,
    where the log-mel keeps it as a level; a voice over it still stands out."""
    pcen = PCEN(64).eval()
    gen = torch.Generator().manual_seed(3)
    hum = torch.randn(1, 64, 101, generator=gen)  # ±1 dB of flicker on a steady background
    with torch.no_grad():
        quiet, loud = pcen(hum - 25), pcen(hum + 15)  # the same background 40 dB apart: 4.0 apart as log-mel / 10
        settled = slice(10, None)  # once the smoother has followed the level
        assert abs(float(loud[..., settled].mean() - quiet[..., settled].mean())) < 0.1
        voice = hum - 25
        voice[..., 50:60] += 25  # a word 25 dB over the background
        out = pcen(voice)
    assert out[..., 50:60].mean() > 5 * out[..., 20:45].mean()


def test_pcen_smoother_is_the_recursion_it_stands_for():
    """The matrix product is M[t] = (1 - s) M[t-1] + s E[t] from M[-1] = E[0], written as a loop here."""
    pcen = PCEN(8).eval()
    db = torch.randn(2, 8, 30, generator=torch.Generator().manual_seed(4)) * 15 - 30
    power, s = 10 ** (db / 10), pcen.smoothing
    smooth, state = torch.empty_like(power), power[..., 0]
    for t in range(power.shape[-1]):
        state = (1 - s) * state + s * power[..., t]
        smooth[..., t] = state
    alpha, delta, root = pcen.log_alpha.exp(), pcen.log_delta.exp(), pcen.log_root.exp()
    expected = (power / (pcen.eps + smooth) ** alpha + delta) ** root - delta ** root
    with torch.no_grad():
        torch.testing.assert_close(pcen(db), expected, rtol=1e-4, atol=1e-6)


def test_params_refuse_a_stem_that_misses_spoken_frames():
    raw = PARAMS.model.model_dump()
    for kernel, stride in ((2, 2), (3, 3), (1, 2), (4, 1)):
        with pytest.raises(ValidationError, match=f"stem_kernel {kernel} at stem_stride {stride}"):
            ModelParams(**{**raw, "stem_kernel": kernel, "stem_stride": stride})
    for kernel, stride in ((1, 1), (3, 2), (5, 2), (5, 3)):
        assert ModelParams(**{**raw, "stem_kernel": kernel, "stem_stride": stride}).stem_kernel == kernel


@pytest.mark.parametrize("norm", ["pcen", "log+pcen"])
def test_params_refuse_pcen_on_mfccs(norm: str):
    raw = PARAMS.model_dump()
    raw["model"]["input_norm"], raw["features"]["kind"] = norm, "mfcc"
    with pytest.raises(ValidationError, match=f"{re.escape(norm)} needs features.kind: logmel"):
        type(PARAMS)(**raw)
    raw["features"]["kind"] = "logmel"
    assert type(PARAMS)(**raw).model.input_norm == norm


def test_decay_matrix_is_the_one_pole_recursion():
    """`power @ decay_matrix` must be y[t] = x[t] + d·y[t-1] from rest, row by row, each with its decay."""
    torch.manual_seed(0)
    x = torch.rand(2, 3, 17)
    log_decay = torch.tensor([-0.1, -0.7])
    y, prev = torch.zeros_like(x), torch.zeros(2, 3)
    for t in range(x.shape[-1]):
        prev = x[..., t] + log_decay.exp()[:, None] * prev
        y[..., t] = prev
    torch.testing.assert_close(x @ decay_matrix(17, log_decay), y)


def test_pcen_smoother_kept_per_length_is_built_afresh_for_each_and_bounded():
    pcen = PCEN(4).eval()
    db = torch.randn(1, 4, 40) * 10 - 40
    with torch.no_grad():
        full = pcen(db)
        assert (40, "cpu") in pcen._smoothers
        # A shorter clip after a longer one uses its own smoother, not a slice of a wrong one.
        torch.testing.assert_close(pcen(db[..., :25]), full[..., :25])
        for t in range(2, 2 + 2 * PCEN.MAX_KEPT):
            pcen(db[..., :t])
    assert len(pcen._smoothers) <= PCEN.MAX_KEPT


def test_pcen_smoother_survives_another_thread_clearing_the_kept_ones():
    """A service runs forward passes on several threads: one thread's `clear()` (the cache full) may
    land between another's store and its read. Simulated here by a store that is cleared at once."""

    class ClearedAtOnce(dict):
        def __setitem__(self, key, value):
            super().__setitem__(key, value)
            self.clear()  # what a second thread, finding the cache full, does meanwhile

    pcen = PCEN(4).eval()
    db = torch.randn(1, 4, 30) * 10 - 40
    with torch.no_grad():
        expected = pcen(db)
        pcen._smoothers = ClearedAtOnce()
        torch.testing.assert_close(pcen(db), expected)


def test_log_and_pcen_views_are_the_log_mel_and_its_pcen_each_normalised_and_masked():
    model = VoiceLockNet(64, PARAMS.model.model_copy(update={"input_norm": "log+pcen"})).eval()
    feats = torch.randn(2, 64, 50) * 10 - 40
    frames = torch.tensor([50, 20])
    with torch.no_grad():
        views = model.input_views(feats, frames)
        mask = torch.arange(50)[None, :] < frames[:, None]
        assert views.shape == (2, 2, 64, 50)
        heard = at_level(feats, frames, PARAMS.model.input_level_db)  # both views read the clip at one level
        torch.testing.assert_close(views[:, 0], model.input_bn(heard / 10.0) * mask[:, None])
        torch.testing.assert_close(views[:, 1], model.pcen_bn(model.pcen(heard)) * mask[:, None])
        assert not views[1, :, :, 20:].any()  # silence after the spoken frames is zero in both views
        # The second view reaches the embedding: its own normalisation moves the output.
        before = model(feats, frames).word
        model.pcen_bn.bias.add_(1.0)
        assert not torch.allclose(model(feats, frames).word, before, atol=1e-4)


def test_pcen_smoother_built_under_inference_mode_trains_afterwards():
    pcen = PCEN(4)
    db = torch.randn(2, 4, 30) * 10 - 40
    with torch.inference_mode():
        pcen(db)
    # A gradient through the input (as an attack search takes) saves the kept kernel for backward:
    # an inference tensor there would raise.
    db.requires_grad_()
    pcen(db).sum().backward()
    assert pcen.log_alpha.grad is not None and torch.isfinite(pcen.log_alpha.grad).all()
    assert db.grad is not None and torch.isfinite(db.grad).all()


def test_params_refuse_pooling_more_blocks_than_there_are():
    raw = PARAMS.model.model_dump()
    with pytest.raises(ValidationError, match="pooled_blocks 5 exceeds the 4 blocks"):
        ModelParams(**{**raw, "pooled_blocks": 5})
    assert ModelParams(**{**raw, "pooled_blocks": 4}).pooled_blocks == 4


def test_a_checkpoint_from_before_the_front_loads_as_the_network_it_was(tmp_path):
    """Releases in the BentoML store predate `front_channels` and `pooled_blocks`: their params lack
    the keys, and must load as the network they were trained as (no front, last block pooled)."""
    old_params = PARAMS.model.model_copy(update={"front_channels": 0, "stem_kernel": 5, "stem_stride": 2})
    old = VoiceLockNet(64, old_params).eval()
    path = save_checkpoint(tmp_path / "model.pt", old, old_params, PARAMS.features, 16000, 64)
    payload = torch.load(path, weights_only=False)
    for key in ("front_channels", "pooled_blocks"):
        del payload["model_params"][key]
    torch.save(payload, path)
    loaded, _ = load_checkpoint(path)
    assert loaded.front is None and loaded.pooled_blocks == 1
    x, frames = torch.randn(2, 64, 101) * 10 - 40, torch.tensor([101, 70])
    torch.testing.assert_close(loaded(x, frames).speaker, old(x, frames).speaker)


def test_mining_keeps_only_valid_triplets():
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    emb = torch.nn.functional.normalize(torch.randn(6, 8, generator=torch.Generator().manual_seed(0)), dim=1)
    for strategy in ("batch_all", "semi_hard", "batch_hard"):
        a, p, n = mine(labels, pairwise_distances(emb), margin=2.0, strategy=strategy, max_triplets=1000)
        assert (labels[a] == labels[p]).all() and (a != p).all() and (labels[a] != labels[n]).all()
    a, _, _ = mine(labels, pairwise_distances(emb), margin=4.0, strategy="batch_all", max_triplets=1000)
    assert a.numel() == 6 * 1 * 4  # margin 4 > any distance: every valid triplet is active
    a, _, _ = mine(labels, pairwise_distances(emb), margin=4.0, strategy="batch_all", max_triplets=10)
    assert a.numel() == 10
    a, _, _ = mine(labels, pairwise_distances(emb), margin=4.0, strategy="batch_hard", max_triplets=1000)
    assert a.numel() == 6  # one per anchor


@pytest.mark.parametrize("strategy", ["batch_all", "semi_hard"])
def test_mining_finds_exactly_the_triplets_of_its_definition(strategy):
    """Mining walks anchor-positive pairs instead of a B×B×B cube: it must still return every triplet
    the strategy defines, each once, in (anchor, positive, negative) order, before the random cap."""
    gen = torch.Generator().manual_seed(1)
    labels = torch.randint(0, 5, (40,), generator=gen)
    emb = torch.nn.functional.normalize(torch.randn(40, 16, generator=gen), dim=1)
    dist, margin = torch.cdist(emb, emb), 0.3
    expected = []
    for a in range(40):
        for p in range(40):
            if p == a or labels[p] != labels[a]:
                continue
            for n in range(40):
                d_ap, d_an = dist[a, p], dist[a, n]
                if labels[n] == labels[a]:
                    continue
                if (d_an > d_ap and d_an < d_ap + margin) if strategy == "semi_hard" else (d_ap - d_an + margin > 0):
                    expected.append((a, p, n))
    a, p, n = mine(labels, pairwise_distances(emb), margin, strategy, max_triplets=10**6)
    assert len(expected) > 100
    assert list(zip(a.tolist(), p.tolist(), n.tolist())) == expected


@pytest.mark.parametrize("n", [20, 5_000])  # n <= 4k permutes; above, draws with repeats dropped
def test_the_triplet_cap_draws_distinct_triplets_uniformly(n):
    """The cap keeps k of n active triplets: distinct, repeatable from the generator, and each triplet
    as likely as any other (a bias towards early indices would favour some anchors over the rest)."""
    k = 7 if n == 20 else 1_000
    first = distinct_sample(n, k, torch.Generator().manual_seed(4))
    assert first.numel() == k == first.unique().numel()
    assert 0 <= int(first.min()) and int(first.max()) < n
    assert torch.equal(first, distinct_sample(n, k, torch.Generator().manual_seed(4)))
    gen, rounds = torch.Generator().manual_seed(5), 400
    hits = torch.zeros(n)
    for _ in range(rounds):
        hits[distinct_sample(n, k, gen)] += 1
    expected = rounds * k / n  # 140 (n = 20) or 80 (n = 5000) per index
    assert abs(hits[: n // 2].mean() - expected) < 0.05 * expected  # early and late indices alike
    assert abs(hits[n // 2:].mean() - expected) < 0.05 * expected
    assert hits.std() < 1.3 * (expected * (1 - k / n)) ** 0.5  # no more spread than a fair draw's


def test_triplet_loss_is_torchs_triplet_margin_loss_on_the_mined_triplets():
    """The loss reads one distance matrix instead of gathered embeddings (for speed): its value and
    gradient must still be TripletMarginLoss's on the same triplets."""
    gen = torch.Generator().manual_seed(2)
    labels = torch.randint(0, 6, (48,), generator=gen)
    emb = torch.nn.functional.normalize(torch.randn(48, 32, generator=gen), dim=1).requires_grad_()
    loss, count = triplet_loss(labels, emb, 0.3, "batch_all", 500, torch.Generator().manual_seed(3))
    a, p, n = mine(labels, torch.cdist(emb, emb), 0.3, "batch_all", 500, torch.Generator().manual_seed(3))
    assert count == a.numel() == 500
    reference = torch.nn.TripletMarginLoss(margin=0.3)(emb[a], emb[p], emb[n])
    torch.testing.assert_close(loss, reference, atol=1e-5, rtol=1e-5)
    (mine_grad,) = torch.autograd.grad(loss, emb)
    (ref_grad,) = torch.autograd.grad(reference, emb)
    torch.testing.assert_close(mine_grad, ref_grad, atol=1e-5, rtol=1e-4)
    # Identical embeddings (a distance of zero) leave the gradient finite.
    twins = torch.cat([emb[:1], emb[:1], emb[1:4]]).detach().requires_grad_()
    loss, _ = triplet_loss(torch.tensor([0, 0, 1, 1, 2]), twins, 0.3, "batch_all", 100)
    loss.backward()
    assert torch.isfinite(twins.grad).all()


def test_batches_are_speakers_by_words_by_takes():
    index = _speaker_index()
    batch = SpeakerWordBatches(index, speakers=4, words=3, takes=2, seed=0).batch()
    picked = index.iloc[batch]
    assert len(batch) == 4 * 3 * 2
    assert picked["speaker"].nunique() == 4 and picked["word"].nunique() == 3
    assert (picked.groupby(["speaker", "word"]).size() == 2).all()


@pytest.mark.parametrize("logmel", [True, False])
def test_augmentation_shapes_bounds_and_determinism(logmel: bool):
    feats = torch.randn(8, 64, 101) * 10 - 50
    frames = torch.tensor([101, 90, 80, 70, 60, 50, 40, 30])
    noise = torch.randn(5, 64, 101) * 5 - 70
    a = FeatureAugmenter(PARAMS.augment, 0.01, noise, logmel, seed=1)
    b = FeatureAugmenter(PARAMS.augment, 0.01, noise, logmel, seed=1)
    torch.manual_seed(0)
    x1, f1 = a(feats, frames)
    torch.manual_seed(0)
    x2, f2 = b(feats, frames)
    assert x1.shape == feats.shape and torch.isfinite(x1).all()
    assert ((f1 >= 1) & (f1 <= 101)).all()
    torch.testing.assert_close(x1, x2)
    assert not torch.allclose(x1, feats)
    off = FeatureAugmenter(PARAMS.augment.model_copy(update={"enabled": False}), 0.01, noise, logmel, seed=1)
    x3, f3 = off(feats, frames)
    assert x3 is feats and f3 is frames


@pytest.mark.parametrize("steps", [1, 2, 3, 6, 10, 20, 400])
def test_lr_schedule_runs_for_any_number_of_steps(steps: int):
    # 10 steps (e.g. 2 epochs × 5 batches) used to raise ZeroDivisionError inside OneCycleLR.
    from voicelock.model.train import one_cycle

    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=0.01)
    schedule = one_cycle(opt, 0.01, steps)
    rates = []
    for _ in range(steps):
        opt.step()
        schedule.step()
        rates.append(opt.param_groups[0]["lr"])
    assert all(0 < r <= 0.01 + 1e-12 for r in rates[:-1])
    if steps >= 3:
        assert max(rates) == pytest.approx(0.01, rel=1e-6)


def test_margin_softmax_penalises_the_true_class_and_skips_unknown_speakers():
    from voicelock.model.margin_softmax import IGNORE, MarginSoftmax

    torch.manual_seed(0)
    head = MarginSoftmax(dim=8, classes=4, margin=0.3, scale=10.0)
    emb = torch.nn.functional.normalize(head.centres.detach()[[0, 1, 2]].clone(), dim=1)  # at their centres
    targets = torch.tensor([0, 1, 2])
    with_margin = head(emb, targets)
    head.margin = 0.0
    assert with_margin > head(emb, targets)  # the margin makes the true class harder to win
    head.margin = 0.3
    # A clip of no class (the owner in fine-tuning) adds nothing; a batch of only such clips gives 0.
    mixed = head(torch.cat([emb, emb[:1]]), torch.tensor([0, 1, 2, IGNORE]))
    assert mixed.item() == pytest.approx(with_margin.item(), rel=1e-5)
    none = head(emb, torch.full((3,), IGNORE))
    assert none.item() == 0.0
    none.backward()  # still differentiable, so a training step never breaks


def test_class_centres_start_at_each_class_mean_embedding():
    # Fine-tuning starts from a trained network: its centres must sit where its classes already are.
    import numpy as np

    from voicelock.model.train import Split, centres_from_class_means, embed, margin_classifiers

    torch.manual_seed(0)
    model = VoiceLockNet(64, PARAMS.model).eval()
    index = pd.DataFrame({"speaker": ["b", "a", "b", "c", "a", "c"], "word": ["x", "y", "y", "x", "x", "y"]})
    split = Split(np.random.default_rng(0).normal(-40, 10, (6, 64, 50)).astype(np.float16),
                  np.array([50, 40, 30, 50, 45, 35]), index)
    tp = PARAMS.pretrain.model_copy(update={"speaker_class_weight": 1.0, "word_class_weight": 1.0})
    heads = margin_classifiers(model, index, tp, torch.device("cpu"))
    centres_from_class_means(heads, model, split, torch.device("cpu"))
    words, speakers = embed(model, split.features, split.frames, torch.device("cpu"))
    for head, emb in (("speaker", speakers), ("word", words)):
        classes, classifier, _ = heads[head]
        for label, i in classes.items():
            mean = emb[index[head].to_numpy() == label].mean(0)
            got = torch.nn.functional.normalize(classifier.centres[i].detach(), dim=0).numpy()
            np.testing.assert_allclose(got, mean / np.linalg.norm(mean), atol=1e-5)


def test_speaker_backend_discards_what_varies_within_a_speaker():
    # Six voices apart on axes 0-5; the word spoken moves every voice a lot along axes 6-7. Raw cosine
    # confuses voices across words; the fitted back-end keeps the voice axes and drops the word's.
    import numpy as np

    from voicelock.model.backend import SpeakerBackend

    rng = np.random.default_rng(0)
    speakers = np.repeat(np.arange(6), 40)
    x = np.zeros((240, 16))
    x[np.arange(240), speakers] = 1.0
    x[:, 6:8] = rng.normal(0, 2.0, (240, 2))
    x += rng.normal(0, 0.05, x.shape)
    raw = torch.nn.functional.normalize(torch.tensor(x, dtype=torch.float32), dim=1)
    backend = SpeakerBackend(16, 5, shrinkage=0.1)
    assert torch.equal(backend(raw), raw)  # identity until fitted: training shapes the raw embedding
    backend.fit(raw.numpy(), speakers)
    out = backend(raw)
    assert out.shape == (240, 5)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(240))

    def worst_margin(e: torch.Tensor) -> float:  # lowest same-voice cosine minus highest other-voice one
        cos = e @ e.T
        same = torch.as_tensor(speakers[:, None] == speakers[None, :])
        return float(cos[same].min() - cos[~same].max())

    assert worst_margin(raw) < 0 < worst_margin(out)
    # The fitted map travels in the state dict, so a loaded checkpoint scores in the same space.
    again = SpeakerBackend(16, 5, shrinkage=0.1)
    again.load_state_dict(backend.state_dict())
    torch.testing.assert_close(again(raw), out)
    backend.reset()
    assert torch.equal(backend(raw), raw)


def test_warped_speaker_copies_are_new_speakers_with_formants_moved():
    """Speaker augmentation: each warp factor adds a copy of every speaker under a new id, and the
    augmenter moves its spectral peaks by that factor on the features' own mel scale."""
    import pandas as pd

    from voicelock.model.augment import warp_source_bins, with_warped_speakers

    index = pd.DataFrame({"speaker": ["a", "a", "b"], "word": ["yes", "no", "yes"]})
    out = with_warped_speakers(index, [0.9, 1.1])
    assert len(out) == 9 and out["speaker"].nunique() == 6
    assert out.loc[out["speaker"] == "a~1.1", "source"].tolist() == [0, 1]
    assert out.groupby("speaker")["speaker_warp"].nunique().eq(1).all()
    assert sorted(out["speaker_warp"].unique()) == [0.9, 1.0, 1.1]
    # A peak at bin k of a 64-bin 20–7600 Hz mel scale lands where its frequency × 1.1 lies.
    band, n = (20.0, 7600.0), 64
    src = warp_source_bins(n, band, torch.tensor([1.0, 1.1]))
    assert torch.allclose(src[0], torch.arange(n, dtype=torch.float32), atol=1e-3)  # 1.0 reads itself
    mel = lambda hz: 2595 * np.log10(1 + hz / 700)  # noqa: E731
    edges = np.linspace(mel(20.0), mel(7600.0), n + 2)
    centre_hz = 700 * (10 ** (edges[1:-1] / 2595) - 1)
    k = 30
    target = np.argmin(np.abs(centre_hz - centre_hz[k] * 1.1))
    assert abs(float(src[1, target]) - k) < 1.0  # the warped bin reads the source peak


def _uniform(gen: torch.Generator, n: int, bounds) -> torch.Tensor:
    """The augmenter's draw, written out again on purpose: the replay tests check its draws against
    their own reading of them, not against the code under test."""
    return bounds[0] + (bounds[1] - bounds[0]) * torch.rand(n, generator=gen)


def test_the_room_is_a_one_pole_smear_of_power_and_touches_only_the_clips_in_a_room():
    """The room runs as a product with a matrix of decay powers (for speed): each clip in a room must
    get the recursive filter y[t] = x[t] + decay·y[t-1] it stands for, at its own reverberation time
    and level, and a dry clip must stay exactly as it was. The draws are replayed in the augmenter's
    order (room or not, rt60, level) — the order is part of what makes training repeatable."""
    hop, n = 0.01, 24
    feats = torch.randn(n, 64, 50, generator=torch.Generator().manual_seed(4)) * 10 - 50
    params = PARAMS.augment.model_copy(update={"room_probability": 0.5, "rt60_range": [0.2, 0.9],
                                               "reverb_gain_db_range": [-12.0, 0.0]})
    out = FeatureAugmenter(params, hop, None, True, seed=1)._room(feats)
    gen = torch.Generator().manual_seed(1)
    in_room = torch.rand(n, generator=gen) < params.room_probability
    rt60 = _uniform(gen, n, params.rt60_range)
    wet = 10 ** (_uniform(gen, n, params.reverb_gain_db_range) / 10)
    assert 0 < int(in_room.sum()) < n
    assert torch.equal(out[~in_room], feats[~in_room])
    decay = (10 ** (-6 * hop / rt60))[:, None]
    power = 10 ** (feats / 10)
    smeared = power.clone()
    for t in range(1, feats.shape[-1]):
        smeared[..., t] = power[..., t] + decay * smeared[..., t - 1]
    tail = (smeared - power) * (1 - decay)[..., None]
    expected = 10 * torch.log10(power + wet[:, None, None] * tail + 1e-10)
    torch.testing.assert_close(out[in_room], expected[in_room], atol=1e-3, rtol=1e-4)
    assert (out - feats)[in_room].abs().amax() > 1.0  # a real tail, not a no-op


def test_noise_touches_only_the_clips_that_draw_it_at_their_own_snr():
    n, t = 24, 50
    feats = torch.randn(n, 64, t, generator=torch.Generator().manual_seed(5)) * 10 - 50
    noise = torch.randn(3, 64, 80, generator=torch.Generator().manual_seed(6)) * 5 - 60
    frames = torch.randint(20, t + 1, (n,), generator=torch.Generator().manual_seed(7))
    params = PARAMS.augment.model_copy(update={"noise_probability": 0.5})
    out = FeatureAugmenter(params, 0.01, noise, True, seed=2)._noise(feats, frames)
    gen = torch.Generator().manual_seed(2)  # replay: noisy or not, which noise, SNR
    noisy = torch.rand(n, generator=gen) < params.noise_probability
    pick = torch.randint(0, len(noise), (n,), generator=gen)
    snr = _uniform(gen, n, params.noise_snr_db_range)
    assert 0 < int(noisy.sum()) < n
    assert torch.equal(out[~noisy], feats[~noisy])
    for i in torch.nonzero(noisy).squeeze(1).tolist():
        speech = 10 ** (feats[i, :, : frames[i]] / 10)
        added = 10 ** (out[i] / 10) - 10 ** (feats[i] / 10)
        # the added power is the picked noise, scaled so speech (its spoken frames) / noise = the SNR drawn
        level = speech.mean() / (10 ** (noise[pick[i]][:, :t] / 10)).mean()
        torch.testing.assert_close(added, 10 ** (noise[pick[i]][:, :t] / 10) * level / 10 ** (snr[i] / 10),
                                   atol=1e-8, rtol=2e-3)  # float32 dB round trip


def _speaker_index() -> pd.DataFrame:
    rows = [(s, w, t) for s in "ABCDEFGH" for w in ("yes", "no", "up", "dog") for t in range(3)]
    return pd.DataFrame(rows, columns=["speaker", "word", "utterance"])


def test_a_heavier_speaker_is_drawn_that_much_more_often():
    index = _speaker_index()
    sampler = SpeakerWordBatches(index, speakers=2, words=3, takes=2, seed=0, weights={"A": 7.0})
    picked = [set(index.iloc[sampler.batch()]["speaker"]) for _ in range(2000)]
    share = {s: np.mean([s in p for p in picked]) for s in "ABCDEFGH"}
    # Two of eight drawn without replacement: A (7 of 14 weight) is in ~3 of 4 batches, each other speaker
    # in ~1 of 5; drawn evenly every speaker is in 1 of 4.
    assert share["A"] > 0.65
    assert all(share[s] < 0.3 for s in "BCDEFGH")


def test_even_weights_draw_exactly_the_unweighted_batches():
    index = _speaker_index()
    plain = SpeakerWordBatches(index, speakers=4, words=3, takes=2, seed=5)
    even = SpeakerWordBatches(index, speakers=4, words=3, takes=2, seed=5, weights=dict.fromkeys("ABCDEFGH", 1.0))
    for _ in range(20):
        np.testing.assert_array_equal(plain.batch(), even.batch())


def test_speaker_weights_follow_the_engine_to_the_warped_copies(caplog: pytest.LogCaptureFixture):
    from voicelock.model.augment import with_warped_speakers
    from voicelock.model.train import speaker_weights

    index = pd.DataFrame({"speaker": ["a", "a", "b"], "word": ["yes", "no", "yes"],
                          "engine": ["festival", "festival", "espeak-ng"]})
    weights = speaker_weights(with_warped_speakers(index, [0.9]), {"festival": 3.0})
    assert weights == {"a": 3.0, "b": 1.0, "a~0.9": 3.0, "b~0.9": 1.0}
    # A corpus without engines (real Speech Commands) or a misspelt engine: even weights, said out loud.
    assert speaker_weights(index.drop(columns="engine"), {"festival": 3.0}) == {}
    assert set(speaker_weights(index, {"Festival": 3.0}).values()) == {1.0}
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("no engine column" in w for w in warnings) and any("['Festival']" in w for w in warnings)


def test_training_batches_draw_by_the_params_engine_weights():
    from voicelock.model.train import Split, TrainingBatches

    index = _speaker_index().assign(engine=lambda d: np.where(d["speaker"] == "A", "festival", "espeak-ng"),
                                    frames=50)
    split = Split(np.zeros((len(index), 64, 60), dtype=np.float16), index["frames"].to_numpy(), index)
    augmenter = FeatureAugmenter(PARAMS.augment, 0.01, None, True, seed=1)
    tp = PARAMS.pretrain.model_copy(update={"engine_weights": {"festival": 3.0}})
    weights = TrainingBatches(split, tp, augmenter, seed=0).sampler.weights
    assert weights["A"] == 3.0 and all(weights[f"A~{w:g}"] == 3.0 for w in augmenter.speaker_warps)
    assert {weights[s] for s in weights if not s.startswith("A")} == {1.0}


def test_a_clips_embedding_does_not_depend_on_the_batch_it_is_embedded_in():
    # embed() batches for speed (128 a batch on a CPU): clips of other lengths beside a clip, or a batch
    # boundary through a split, must not move its embedding (masks per clip; BatchNorm in eval mode).
    from voicelock.model.train import embed

    torch.manual_seed(0)
    model = VoiceLockNet(64, PARAMS.model).eval()
    rng = np.random.default_rng(1)
    feats = rng.normal(-40, 10, (300, 64, 101)).astype(np.float16)
    frames = rng.integers(30, 102, 300)
    alone = [embed(model, feats[i:i + 1], frames[i:i + 1], torch.device("cpu")) for i in (0, 127, 128, 299)]
    for size in (None, 7, 512):
        words, speakers = embed(model, feats, frames, torch.device("cpu"), batch_size=size)
        assert words.shape == (300, PARAMS.model.word_embedding)
        for (w, s), i in zip(alone, (0, 127, 128, 299)):
            np.testing.assert_allclose(words[i], w[0], atol=1e-5)
            np.testing.assert_allclose(speakers[i], s[0], atol=1e-5)


def test_a_recordings_level_changes_no_embedding():
    # model.input_level_db: the same clip 20 dB quieter (every band, every frame) embeds the same; the
    # loudest frame is sought among the spoken frames only, so loud padding after them changes nothing.
    torch.manual_seed(0)
    assert PARAMS.model.input_level_db is not None
    model = VoiceLockNet(64, PARAMS.model).eval()
    feats, frames = torch.randn(3, 64, 101) * 8 - 40, torch.tensor([101, 60, 30])
    loud_padding = feats.clone()
    loud_padding[1, :, 60:] = 0.0
    loud_padding[2, :, 30:] = 0.0
    plain, quieter, padded = model(feats, frames), model(feats - 20, frames), model(loud_padding, frames)
    unlock_copy = inference_copy(model)  # what an unlock runs
    for other in (quieter, padded, unlock_copy(feats - 20, frames)):
        torch.testing.assert_close(other.word, plain.word, atol=1e-5, rtol=0)
        torch.testing.assert_close(other.speaker, plain.speaker, atol=1e-5, rtol=0)
    # As recorded (None), the network hears the level: the test above has something to catch.
    torch.manual_seed(0)
    as_recorded = VoiceLockNet(64, PARAMS.model.model_copy(update={"input_level_db": None})).eval()
    assert (as_recorded(feats, frames).word - as_recorded(feats - 20, frames).word).abs().max() > 1e-3
