"""PNG plots of training curves and confusion matrices (matplotlib, no display)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_history(history: dict[str, Sequence[float]], path: Path, title: str) -> None:
    """Loss and accuracy per epoch, training against validation."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    epochs = range(1, len(history.get("loss", [])) + 1)
    for ax, metric in zip(axes, ("loss", "accuracy"), strict=True):
        for prefix, style in (("", "-o"), ("val_", "-s")):
            values = history.get(prefix + metric)
            if values:
                ax.plot(
                    list(epochs)[: len(values)],
                    values,
                    style,
                    label=("validation " if prefix else "training ") + metric,
                )
        ax.set_xlabel("epoch")
        ax.set_title(metric)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_confusion(matrix: Sequence[Sequence[int]], labels: Sequence[str], path: Path, title: str) -> None:
    """Confusion matrix with counts and row percentages in each cell."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.imshow(matrix, cmap="Blues")
    for i, row in enumerate(matrix):
        total = sum(row) or 1
        for j, value in enumerate(row):
            color = "white" if value > 0.5 * max(max(r) for r in matrix) else "black"
            ax.text(j, i, f"{value}\n{100 * value / total:.1f}%", ha="center", va="center", color=color)
    ax.set_xticks(range(len(labels)), labels)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_reliability(before: dict, after: dict, path: Path, title: str) -> None:
    """Reliability diagram: accuracy against confidence per bin, before and after calibration.

    Args:
        before: :func:`catdog.serving.calibration.reliability` of the raw probabilities.
        after: The same for the calibrated ones.
        path: PNG file to write.
        title: Figure title.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.plot([0, 1], [0, 1], ":", color="grey", label="perfect calibration")
    for report, style, name in ((before, "-o", "before"), (after, "-s", "after")):
        points = [(b["confidence"], b["accuracy"]) for b in report["bins"] if b["count"]]
        ax.plot([p[0] for p in points], [p[1] for p in points], style, label=f"{name} (ECE {report['ece']:.3f})")
    ax.set_xlabel("confidence (the answer's probability)")
    ax.set_ylabel("accuracy")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left")
    ax.set_title(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
