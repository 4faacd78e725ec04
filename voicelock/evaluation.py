"""Evaluation on speakers never seen in training: keyword accuracy, speaker EER/minDCF, unlock FAR/FRR.

Thresholds are calibrated on the validation speakers for the target FAR and only then applied to the
test speakers, so the reported FAR/FRR are what a new user would meet. The same code judges any folder
in Speech Commands layout (`voicelock evaluate --data DIR`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from voicelock.audio import as_heard
from voicelock.data.layout import SPEAKERS_FILE, Clip, scan_corpus
from voicelock.errors import VoicelockError
from voicelock.features import FeatureExtractor, load_split
from voicelock.liveness import challenge_word_trials, template_scores, word_templates
from voicelock.metrics import eer, error_curve, min_dcf, threshold_for_far
from voicelock.metrics_files import write_metrics
from voicelock.model.checkpoint import MODEL_FILE, check_built_as_configured, load_checkpoint
from voicelock.model.finetune import clips_to_split, owner_splits
from voicelock.model.network import VoiceLockNet
from voicelock.model.train import Split, embed
from voicelock.params import EvaluateParams, Params
from voicelock.release import Release
from voicelock.replay import (
    RememberedTakes,
    band_limited,
    calibrate_replay_threshold,
    fingerprints,
    genuine_repeat_similarities,
    genuine_replay_refusals,
    remembered_set,
    views,
)
from voicelock.scoring import SpeakerScorer, build_cohort
from voicelock.trials import (
    UNLOCK_IMPOSTOR_KINDS,
    UnlockTrials,
    keyword_predictions,
    speaker_pair_scores,
    unlock_trials,
)
from voicelock.verifier import Verifier, make_template

log = logging.getLogger(__name__)


@dataclass
class SplitEvaluation:
    metrics: dict[str, float]
    det: pd.DataFrame  # same-word speaker trials: threshold, far, frr
    confusion: pd.DataFrame  # actual, predicted
    scores: dict[str, np.ndarray]  # for histograms


def calibrate(trials: UnlockTrials, target_far: float, raw_floor_far: float) -> dict[str, float]:
    """Word threshold from the owner saying other words; voice thresholds from other speakers saying the
    password: first the raw-cosine floor at `raw_floor_far`, then the normalised threshold so that the
    two together let at most `target_far` through (voicelock/verifier.py says why both)."""
    impostor_raw = trials.raw["other_speaker_password"]
    floor = threshold_for_far(impostor_raw, raw_floor_far)
    past_floor = np.where(impostor_raw >= floor, trials.speaker["other_speaker_password"], -np.inf)
    return {"speaker": threshold_for_far(past_floor, target_far), "speaker_raw": floor,
            "word": threshold_for_far(trials.word["owner_other_word"], target_far),
            "target_far": target_far}


def unlock_rates(trials: UnlockTrials, thresholds: dict[str, float]) -> dict[str, float]:
    """FRR and each impostor kind's FAR, decided by the verifier's own rule."""
    rule = Verifier(SpeakerScorer(), thresholds)  # the trials are scored already: only the rule is used

    def accepted(kind: str) -> np.ndarray:
        return rule.accepts(trials.word[kind], trials.speaker[kind], trials.raw[kind], trials.rival[kind])

    rates = {"frr": float(1 - accepted("genuine").mean()) if trials.word["genuine"].size else float("nan")}
    for kind in UNLOCK_IMPOSTOR_KINDS:
        rates[f"far_{kind}"] = float(accepted(kind).mean()) if trials.word[kind].size else float("nan")
    return rates


def embed_split(model: VoiceLockNet, split: Split) -> tuple[np.ndarray, np.ndarray]:
    return embed(model, split.features, split.frames, next(model.parameters()).device)


def remembered_takes(model: VoiceLockNet, extractor: FeatureExtractor, root: str | Path, split: Split,
                     shifts: list[int], band_hz: float = 0.0, every_take: bool = True) -> RememberedTakes | None:
    """`split`'s takes fingerprinted as the service does (voicelock/replay.py `RememberedTakes`), from
    their audio under `root`: the replay shifts are finer than a feature frame and the band-limited
    view (`band_hz`) is cut from the audio, so the feature cache cannot give them. `every_take`: each
    take is remembered in turn (calibration: the most pairs); else the first take of each speaker's
    word only (a reported figure: fewer embeddings). None for `[0]` without a band-limited view (takes
    remembered as they came: the cached embeddings serve)."""
    if list(shifts) == [0] and not band_hz:
        return None
    device = next(model.parameters()).device
    index, rate, n_views = split.index, extractor.sample_rate, 2 if band_hz else 1
    first = pd.Series(True, index=index.index) if every_take else ~index.duplicated(["speaker", "word"])
    paths, probes, sets = index["path"].tolist(), [], []
    for i in tqdm(range(0, len(paths), 128), desc="replay sets", unit=" chunk"):
        rows = range(i, min(i + 128, len(paths)))
        waves = [as_heard(Path(root) / paths[r], rate, digital_silence_s=extractor.params.digital_silence_s)
                 for r in rows]
        heard = waves + ([band_limited(w, rate, band_hz) for w in waves] if band_hz else [])
        # each remembered take's set but for the rows its probe views already are (shift 0)
        late = [copy for r, w in zip(rows, waves) if first.iloc[r] for copy in views(w, shifts[1:], rate, band_hz)]
        feats, frames = extractor.from_arrays(heard + late)
        fps = fingerprints(*embed(model, feats.numpy(), frames.numpy(), device))
        stored = [r - i for r in rows if first.iloc[r]]
        heard_fps = fps[: len(heard)].reshape(n_views, len(waves), -1).transpose(1, 0, 2)  # (n, V, D)
        late_fps = fps[len(heard):].reshape(len(stored), n_views, len(shifts) - 1, fps.shape[1])
        probes.append(heard_fps)
        sets.extend(remembered_set(heard_fps[j], late_fps[k]) for k, j in enumerate(stored))
    return RememberedTakes(np.concatenate(probes), np.flatnonzero(first.to_numpy()), np.stack(sets))


def split_unlock_trials(word: np.ndarray, speaker: np.ndarray, split: Split, ep: EvaluateParams,
                        rng: np.random.Generator, scorer: SpeakerScorer | None,
                        templates: dict[str, np.ndarray]) -> UnlockTrials:
    """Unlock trials of a split's embeddings; refuses templates so large that no take is left to test."""
    ix = split.index
    most = int(ix.groupby(["speaker", "word"]).size().max()) if len(ix) else 0
    if most <= ep.enroll_clips:
        raise VoicelockError(f"evaluate.enroll_clips: {ep.enroll_clips} takes per template leave none to test — "
                             f"speakers here have at most {most} takes of a word; lower evaluate.enroll_clips "
                             f"below {most} or use a corpus with more takes")
    return unlock_trials(word, speaker, ix["speaker"].to_numpy(), ix["word"].to_numpy(),
                         ix["utterance"].to_numpy(), ep.enroll_clips, ep.max_trials, rng, scorer, templates)


def training_references(model: VoiceLockNet, params: Params) -> tuple[SpeakerScorer, dict[str, np.ndarray]]:
    """What the released model ships from the training speakers: the speaker scorer (AS-norm against
    their cohort, or raw cosine) and one word template per vocabulary word (liveness challenges)."""
    train = Split.from_feature_set(load_split(params.features.out_dir, "training"))
    word, speaker = embed_split(model, train)
    templates = word_templates(word, train.index)
    if params.evaluate.score_norm == "none":
        return SpeakerScorer(), templates
    return SpeakerScorer(build_cohort(speaker, train.index), params.evaluate.cohort_top_k), templates


def calibrate_all(model: VoiceLockNet, val: Split, params: Params, scorer: SpeakerScorer,
                  templates: dict[str, np.ndarray], val_takes: RememberedTakes | None = None) -> dict:
    """Every threshold the verifier uses, from the validation speakers only.

    word / speaker: the unlock rule at `target_far`. speaker_any_word: the voice of a challenge take
    (another word than the password) at `challenge_speaker_far` against other speakers saying other
    words.
    challenge_word: a challenge take's word against the other words' templates at
    `challenge_word_far`. replay: above the closest a genuine take of one word by one voice comes to
    another take's remembered set (`val_takes`, `remembered_takes` at `evaluate.replay_shifts`);
    replay_single: above the closest two genuine takes come, one fingerprint each. replay_band (with
    `evaluate.replay_band_hz`): as replay, in the band-limited view.
    """
    ep = params.evaluate
    word, speaker = embed_split(model, val)
    trials = split_unlock_trials(word, speaker, val, ep, np.random.default_rng(params.seed), scorer, templates)
    thresholds = calibrate(trials, ep.target_far, ep.raw_floor_far)
    thresholds["word_margin"] = ep.word_margin
    thresholds["speaker_any_word"] = threshold_for_far(trials.speaker["other_speaker_other_word"],
                                                       ep.challenge_speaker_far)
    _, wrong_word = challenge_word_trials(word, val.index["word"].to_numpy(), templates)
    thresholds["challenge_word"] = threshold_for_far(wrong_word, ep.challenge_word_far)
    speakers, words = val.index["speaker"].to_numpy(), val.index["word"].to_numpy()
    repeats = genuine_repeat_similarities(word, speaker, speakers, words, val_takes)
    thresholds["replay"] = calibrate_replay_threshold(repeats, ep.replay_margin)
    thresholds["replay_shifts"] = list(ep.replay_shifts)
    thresholds["replay_band_hz"] = ep.replay_band_hz
    if ep.replay_band_hz:  # the band-limited view: its own threshold, as genuine takes come closer in it
        thresholds["replay_band"] = calibrate_replay_threshold(
            genuine_repeat_similarities(word, speaker, speakers, words, val_takes, view=1), ep.replay_margin)
    # Takes remembered alone (older rows and templates, the other takes of a request) are single
    # fingerprints: their threshold comes from pairs of single fingerprints, as before sets.
    thresholds["replay_single"] = calibrate_replay_threshold(
        genuine_repeat_similarities(word, speaker, speakers, words), ep.replay_margin)
    thresholds["score_norm"] = ep.score_norm
    return thresholds


def liveness_metrics(embedded: tuple[np.ndarray, np.ndarray], test: Split, thresholds: dict,
                     templates: dict[str, np.ndarray], served: RememberedTakes | None = None) -> dict[str, float]:
    """On the test speakers (their word and speaker embeddings), at the shipped thresholds: how often a
    genuine take is wrongly refused by each liveness check, and how close a genuine take comes to the
    replay threshold against an earlier take's remembered set (`served`: `remembered_takes` at the
    thresholds' `replay_shifts`)."""
    word, speaker = embedded
    words, speakers = test.index["word"].to_numpy(), test.index["speaker"].to_numpy()
    vocab, scores = template_scores(word, templates)
    known = np.isin(words, vocab)
    own = np.asarray([vocab.index(w) for w in words[known]])
    nearest_ok = scores[known].argmax(axis=1) == own
    above = scores[known][np.arange(own.size), own] >= thresholds["challenge_word"]
    repeats = genuine_repeat_similarities(word, speaker, speakers, words, served)
    replays = Verifier(SpeakerScorer(), thresholds).replays
    refused = (np.asarray([replays(float(r), float(r), -1.0) for r in repeats], dtype=bool)
               if served is None  # every take remembered alone: its own fingerprint is its whole set
               else genuine_replay_refusals(served, speakers, words, replays))
    return {
        "challenge_word_frr": float(1 - np.mean(nearest_ok & above)) if own.size else float("nan"),
        "replay_false_refusals": float(np.mean(refused)) if refused.size else float("nan"),
        "replay_closest_genuine": float(repeats.max()) if repeats.size else float("nan"),
    }


def evaluate_split(model: VoiceLockNet, split: Split, thresholds: dict[str, float], ep: EvaluateParams,
                   seed: int, scorer: SpeakerScorer | None, templates: dict[str, np.ndarray],
                   embedded: tuple[np.ndarray, np.ndarray] | None = None) -> SplitEvaluation:
    """The test metrics of `split` (`scorer` and word `templates`: the release's); `embedded` is its
    (word, speaker) embeddings when already computed."""
    word, speaker = embedded if embedded is not None else embed_split(model, split)
    ix = split.index
    speakers, words = ix["speaker"].to_numpy(), ix["word"].to_numpy()
    rng = np.random.default_rng(seed)
    predicted, _ = keyword_predictions(word, speakers, words, ep.keyword_enroll_clips, rng)
    same_gen, same_imp = speaker_pair_scores(speaker, speakers, words, True, ep.max_trials, rng)
    all_gen, all_imp = speaker_pair_scores(speaker, speakers, words, False, ep.max_trials, rng)
    trials = split_unlock_trials(word, speaker, split, ep, rng, scorer, templates)
    metrics = {
        "keyword_accuracy": float(np.mean(predicted == words)),
        "speaker_eer": eer(same_gen, same_imp)[0],
        "speaker_eer_all_trials": eer(all_gen, all_imp)[0],
        "min_dcf": min_dcf(same_gen, same_imp, ep.p_target),
        **unlock_rates(trials, thresholds),
        "trials_genuine": int(trials.word["genuine"].size),
        **{f"trials_{k}": int(trials.word[k].size) for k in UNLOCK_IMPOSTOR_KINDS},
        "speakers": int(len(set(speakers))),
        "clips": int(len(speakers)),
    }
    curve = error_curve(same_gen, same_imp)
    keep = np.unique(np.linspace(0, len(curve.thresholds) - 1, 400).astype(int))
    det = pd.DataFrame({"threshold": curve.thresholds[keep], "far": curve.far[keep], "frr": curve.frr[keep]})
    confusion = pd.DataFrame({"actual": words, "predicted": predicted.astype(str)})
    scores = {"speaker_genuine": same_gen, "speaker_impostor": same_imp,
              "unlock_word_genuine": trials.word["genuine"], "unlock_word_owner_other_word":
              trials.word["owner_other_word"], "unlock_speaker_genuine": trials.speaker["genuine"],
              "unlock_speaker_other_speaker_password": trials.speaker["other_speaker_password"]}
    return SplitEvaluation(metrics, det, confusion, scores)


def owner_metrics(model: VoiceLockNet, params: Params, test: Split, thresholds: dict[str, float],
                  scorer: SpeakerScorer, templates: dict[str, np.ndarray],
                  test_embedded: tuple[np.ndarray, np.ndarray]) -> dict:
    """The fine-tuned owner: template from fine-tuning takes of the password, probes never trained on."""
    extractor = FeatureExtractor(params.features, params.data.sample_rate)
    owner, tune, held = owner_splits(params, extractor)
    password = params.owner.password
    enrolled = tune.index.index[tune.index["word"] == password][: params.evaluate.enroll_clips].to_numpy()
    rule = Verifier(scorer, thresholds, templates)
    t_word, t_spk = make_template(*embed(model, tune.features[enrolled], tune.frames[enrolled],
                                         next(model.parameters()).device))
    h_word, h_spk = embed_split(model, held)
    x_word, x_spk = test_embedded
    is_pw = held.index["word"].to_numpy() == password
    others_pw = test.index["word"].to_numpy() == password

    def accepted(w: np.ndarray, s: np.ndarray) -> np.ndarray:
        return rule.accepts(*rule.scores(t_word, t_spk, w, s))

    return {
        "owner_frr": float(1 - accepted(h_word[is_pw], h_spk[is_pw]).mean()),
        "owner_far_other_speaker_password": float(accepted(x_word[others_pw], x_spk[others_pw]).mean()),
        "owner_far_owner_other_word": float(accepted(h_word[~is_pw], h_spk[~is_pw]).mean()),
        "owner_trials_genuine": int(is_pw.sum()),
    }


def _write_plots(result: SplitEvaluation, out: Path) -> None:
    from voicelock.plots import plot_confusion, plot_det, plot_scores

    out.mkdir(parents=True, exist_ok=True)
    result.det.to_csv(out / "det.csv", index=False)
    result.confusion.to_csv(out / "confusion.csv", index=False)
    plot_det(result.det, out / "det.png")
    plot_scores(result.scores, out / "scores.png")
    plot_confusion(result.confusion, out / "confusion.png")


def evaluate_model(model: VoiceLockNet, params: Params) -> tuple[dict, SplitEvaluation, SpeakerScorer,
                                                                 dict[str, np.ndarray]]:
    """Calibrate thresholds on the validation speakers, then measure on the test speakers.

    The promotion gate calls this for the production model too, so both are judged on the same data.
    """
    ep = params.evaluate
    cache = params.features.out_dir
    val = Split.from_feature_set(load_split(cache, "validation"))
    test = Split.from_feature_set(load_split(cache, "testing"))
    scorer, templates = training_references(model, params)
    extractor, raw = FeatureExtractor(params.features, params.data.sample_rate), params.data.raw_dir
    thresholds = calibrate_all(model, val, params, scorer, templates,
                               remembered_takes(model, extractor, raw, val, ep.replay_shifts, ep.replay_band_hz))
    log.info("thresholds for FAR %.4f on validation speakers: %s", ep.target_far, thresholds)
    embedded = embed_split(model, test)  # once, for every test figure
    result = evaluate_split(model, test, thresholds, ep, params.seed, scorer, templates, embedded)
    test_takes = remembered_takes(model, extractor, raw, test, thresholds["replay_shifts"],
                                  thresholds["replay_band_hz"], every_take=False)
    metrics = {**result.metrics, **owner_metrics(model, params, test, thresholds, scorer, templates, embedded),
               **liveness_metrics(embedded, test, thresholds, templates, test_takes), "thresholds": thresholds}
    return metrics, result, scorer, templates


def run_evaluation(params: Params, metrics_path: str | Path, plots_dir: str | Path) -> dict:
    """Evaluate the fine-tuned model; write the release (voicelock/release.py), metrics (rates; counts
    and thresholds beside them, `write_metrics`) and plots."""
    path = Path(params.finetune.out_dir) / MODEL_FILE
    model, meta = load_checkpoint(path)
    check_built_as_configured(path, meta, params, "finetune")  # the figures must be of the features served
    metrics, result, scorer, templates = evaluate_model(model, params)
    write_metrics(metrics, metrics_path, params.evaluate.details_file)
    _write_plots(result, Path(plots_dir))
    Release.from_checkpoint(model, meta, metrics["thresholds"], scorer, templates,
                            metrics=metrics).save(params.evaluate.out_dir)
    return metrics


def folder_split(data_dir: str | Path, extractor: FeatureExtractor, desc: str = "features") -> Split:
    """Features of every clip of a folder in Speech Commands layout, in chunks (bounded memory)."""
    clips: list[Clip] = scan_corpus(data_dir)
    chunks = range(0, len(clips), 256)
    parts = [clips_to_split(data_dir, clips[i: i + 256], extractor) for i in tqdm(chunks, desc=desc, unit=" chunk")]
    split = parts[0]
    for part in parts[1:]:
        split = split.concat(part)
    return split


def evaluate_folder(model_dir: str | Path, data_dir: str | Path, ep: EvaluateParams, seed: int) -> dict:
    """Judge an evaluated model on any corpus in Speech Commands layout, at the model's own thresholds."""
    release = Release.load(model_dir)
    split = folder_split(data_dir, release.extractor())
    result = evaluate_split(release.model, split, release.thresholds, ep, seed, release.scorer,
                            release.word_templates)
    return {**result.metrics, "thresholds": release.thresholds}


def evaluate_unseen(params: Params) -> dict:
    """The released model on the unseen-voices corpus (voicelock/data/unseen.py) at its *shipped*
    thresholds, cohort and word templates — never re-calibrated on these voices, so the figures are
    what a new user unlike the training voices meets. Writes `ood.metrics_file` (the keys of the
    in-domain metrics, plus `by_engine`; counts and thresholds beside it, `write_metrics`) and DET /
    confusion plots under `ood.plots_dir`."""
    release = Release.load(params.evaluate.out_dir)
    metrics, result = unseen_metrics(release.model, release.extractor(), release.thresholds, release.scorer,
                                     release.word_templates, params)
    write_metrics(metrics, params.ood.metrics_file, params.ood.details_file)
    _write_plots(result, Path(params.ood.plots_dir))
    return metrics


def unseen_metrics(model: VoiceLockNet, extractor: FeatureExtractor, thresholds: dict[str, float],
                   scorer: SpeakerScorer, templates: dict[str, np.ndarray],
                   params: Params) -> tuple[dict, SplitEvaluation]:
    """Every figure of `model` on the unseen-voices corpus at the given thresholds, overall and by engine.

    The evaluate_unseen stage passes the release's shipped thresholds; the promotion gate passes the
    production model's, calibrated on the same validation speakers, so both models meet the same voices."""
    ep = params.evaluate
    split = folder_split(params.ood.out_dir, extractor, "unseen voices")
    embedded = embed_split(model, split)
    result = evaluate_split(model, split, thresholds, ep, params.seed, scorer, templates, embedded)
    served = remembered_takes(model, extractor, params.ood.out_dir, split, thresholds.get("replay_shifts", [0]),
                              thresholds.get("replay_band_hz", 0.0), every_take=False)
    metrics = {**result.metrics, **owner_metrics(model, params, split, thresholds, scorer, templates, embedded),
               **liveness_metrics(embedded, split, thresholds, templates, served), "thresholds": thresholds}
    speakers = pd.read_csv(Path(params.ood.out_dir) / SPEAKERS_FILE, dtype=str).set_index("id")["engine"]
    engines = split.index["speaker"].map(speakers).to_numpy()
    metrics["by_engine"] = {}
    for engine in sorted(set(engines.tolist())):
        rows = np.flatnonzero(engines == engine)
        part = Split(split.features[rows], split.frames[rows], split.index.iloc[rows].reset_index(drop=True))
        sub = evaluate_split(model, part, thresholds, ep, params.seed, scorer, templates,
                             (embedded[0][rows], embedded[1][rows]))
        metrics["by_engine"][engine] = sub.metrics
    return metrics, result
