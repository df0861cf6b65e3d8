"""Classification metrics in plain numpy, so they are easy to test and read."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from catdog.labels import other_index
from catdog.serving.calibration import answer


def confusion_matrix(y_true: Sequence[int], y_pred: Sequence[int], num_classes: int) -> np.ndarray:
    """Counts with true classes as rows and predicted classes as columns."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)), 1)
    return matrix


def roc_auc(y_true: Sequence[int], scores: Sequence[float]) -> float:
    """Area under the ROC curve: the chance a random positive outranks a random negative.

    Computed from average ranks (Mann-Whitney U), so ties count half.

    Returns:
        The AUC, or NaN when only one class is present.
    """
    y_true = np.asarray(y_true).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    n_pos, n_neg = int(y_true.sum()), int((~y_true).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), dtype=np.float64)
    sorted_scores = scores[order]
    i = 0
    while i < len(scores):
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return float((ranks[y_true].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def classification_report(
    y_true: Sequence[int],
    probabilities: np.ndarray,
    classes: Sequence[str],
    decision_bias: Sequence[float] | None = None,
) -> dict:
    """Accuracy, per-class precision/recall/F1, ROC AUC and confusion matrix.

    Args:
        y_true: True class indices.
        probabilities: ``(N, num_classes)`` predicted probabilities.
        classes: Class names, in index order.
        decision_bias: The calibration's decision bias: the answers judged are
            :func:`catdog.serving.calibration.answer`'s, as the service gives them.

    Returns:
        A JSON-ready dict. For two classes, ``precision``, ``recall``, ``f1``
        and ``roc_auc`` treat class 1 as the positive class; ``per_class``
        has the figures for each class.
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    y_pred, _ = answer(probabilities, decision_bias)
    matrix = confusion_matrix(y_true, y_pred, len(classes))
    per_class = {}
    for i, name in enumerate(classes):
        tp = int(matrix[i, i])
        predicted = int(matrix[:, i].sum())
        actual = int(matrix[i, :].sum())
        precision = tp / predicted if predicted else 0.0
        recall = tp / actual if actual else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[name] = {"precision": precision, "recall": recall, "f1": f1, "support": actual}
    positive = classes[-1]
    report = {
        "images": int(len(y_true)),
        "accuracy": float((y_pred == y_true).mean()) if len(y_true) else float("nan"),
        "balanced_accuracy": float(np.mean([per_class[c]["recall"] for c in classes])),
        "precision": per_class[positive]["precision"],
        "recall": per_class[positive]["recall"],
        "f1": per_class[positive]["f1"],
        "roc_auc": roc_auc(y_true == len(classes) - 1, probabilities[:, -1]),
        "positive_class": positive,
        "per_class": per_class,
        "confusion_matrix": {"labels": list(classes), "rows_true_columns_predicted": matrix.tolist()},
    }
    return report


def format_report(name: str, report: dict) -> str:
    """A small text table of a report, for the console."""
    lines = [
        f"{name}: {report['images']} images",
        f"  accuracy {report['accuracy']:.4f}  balanced {report['balanced_accuracy']:.4f}  "
        f"ROC AUC {report['roc_auc']:.4f}",
        f"  {'class':<10}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>10}",
    ]
    for cls, row in report["per_class"].items():
        lines.append(
            f"  {cls:<10}{row['precision']:>10.4f}{row['recall']:>10.4f}{row['f1']:>10.4f}{row['support']:>10}"
        )
    labels = report["confusion_matrix"]["labels"]
    lines.append("  confusion (rows true, columns predicted): " + "  ".join(labels))
    for label, row in zip(labels, report["confusion_matrix"]["rows_true_columns_predicted"], strict=True):
        lines.append(f"    {label:<8}" + "".join(f"{v:>8}" for v in row))
    return "\n".join(lines)


def source_report(
    y_true: Sequence[int],
    probabilities: np.ndarray,
    sources: Sequence[str],
    classes: Sequence[str],
    decision_bias: Sequence[float] | None = None,
) -> dict:
    """Figures per source (collection) of a labelled part.

    Args:
        y_true: True class indices.
        probabilities: ``(N, num_classes)`` predicted probabilities.
        sources: The source of each example (see :func:`catdog.data.dataset.source_of`).
        classes: Class names, in index order; answers of :data:`catdog.labels.OTHER`, if there, count as flagged.
        decision_bias: The calibration's decision bias (see :func:`catdog.serving.calibration.answer`).

    Returns:
        Per source: images, accuracy, recall of each class present, the
        share answered Other (for Other photos, the flagged rate; for
        pets, the share wrongly set aside) and the accuracy on its pets alone.
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred, _ = answer(probabilities, decision_bias)
    sources = np.asarray(sources)
    other = other_index(classes)
    report = {}
    for source in sorted(set(sources.tolist())):
        mask = sources == source
        row = {"images": int(mask.sum()), "accuracy": float((y_pred[mask] == y_true[mask]).mean())}
        row["recall"] = {
            name: float((y_pred[mask & (y_true == i)] == i).mean())
            for i, name in enumerate(classes)
            if (mask & (y_true == i)).any()
        }
        if other is not None:
            row["answered_other"] = float((y_pred[mask] == other).mean())
            pets = mask & (y_true != other)
            if pets.any():  # a source of pets and Others (Broad's small photos) needs both figures
                row["pets_accuracy"] = float((y_pred[pets] == y_true[pets]).mean())
        report[source] = row
    return report


def format_source_report(report: dict, key: str = "source") -> str:
    """The per-source (or per-``key``) figures as a console table."""
    lines = [f"  {key:<18}{'images':>8}{'accuracy':>10}{'pets':>8}{'as Other':>10}  recall"]
    for source, row in report.items():
        recall = "  ".join(f"{name} {value:.4f}" for name, value in row["recall"].items())
        other = f"{row['answered_other']:>10.4f}" if "answered_other" in row else f"{'':>10}"
        pets = f"{row['pets_accuracy']:>8.4f}" if "pets_accuracy" in row else f"{'':>8}"
        lines.append(f"  {source:<18}{row['images']:>8}{row['accuracy']:>10.4f}{pets}{other}  {recall}")
    return "\n".join(lines)
