"""PNG figures of an evaluation (DVC draws its own from the CSVs next to them)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from scipy.stats import norm  # noqa: E402


def plot_det(det: pd.DataFrame, path: Path) -> None:
    """DET curve on normal-deviate axes, the verification convention."""
    eps = 1e-4
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot(norm.ppf(det["far"].clip(eps, 1 - eps)), norm.ppf(det["frr"].clip(eps, 1 - eps)))
    ticks = np.array([0.001, 0.01, 0.05, 0.2, 0.5])
    labels = ["0.1%", "1%", "5%", "20%", "50%"]
    ax.set_xticks(norm.ppf(ticks), labels)
    ax.set_yticks(norm.ppf(ticks), labels)
    ax.set_xlim(norm.ppf(5e-4), norm.ppf(0.6))
    ax.set_ylim(norm.ppf(5e-4), norm.ppf(0.6))
    ax.set_xlabel("false acceptance rate")
    ax.set_ylabel("false rejection rate")
    ax.set_title("Speaker DET, same-word trials (test speakers)")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_scores(scores: dict[str, np.ndarray], path: Path) -> None:
    pairs = [("speaker_genuine", "speaker_impostor", "speaker, same-word pairs", "cosine score"),
             ("unlock_word_genuine", "unlock_word_owner_other_word", "word score vs template", "cosine score"),
             ("unlock_speaker_genuine", "unlock_speaker_other_speaker_password", "speaker score vs template",
              "unlock speaker score (AS-norm when enabled)")]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.5))
    for ax, (gen, imp, title, xlabel) in zip(axes, pairs):
        both = np.concatenate([scores[gen], scores[imp]])
        bins = np.linspace(min(both.min(), -1.0), max(both.max(), 1.0), 81)
        ax.hist(scores[imp], bins=bins, alpha=0.6, density=True, label="impostor")
        ax.hist(scores[gen], bins=bins, alpha=0.6, density=True, label="genuine")
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_confusion(confusion: pd.DataFrame, path: Path) -> None:
    table = pd.crosstab(confusion["actual"], confusion["predicted"]).reindex(
        index=sorted(confusion["actual"].unique()), columns=sorted(confusion["actual"].unique()), fill_value=0)
    fig, ax = plt.subplots(figsize=(7, 6))
    ax.imshow(table.to_numpy(), cmap="Blues")
    ax.set_xticks(range(len(table.columns)), table.columns, rotation=90)
    ax.set_yticks(range(len(table.index)), table.index)
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    ax.set_title("Keyword confusion (templates from other speakers)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
