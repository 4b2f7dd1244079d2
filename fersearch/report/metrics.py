"""Test-set figures from true labels and predicted probabilities: the metrics.json contract,
scikit-learn's classification report, the per-image predictions table, seed statistics.

Everything here works from plain arrays and dicts (no training), so the figures in
metrics.json are scikit-learn's on the saved predictions and can be checked against them.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from ..fmt import acc


def compute_metrics(y_true: np.ndarray, probs: np.ndarray, names: Sequence[str], split: str) -> dict[str, Any]:
    """The metrics.json contract from true labels and predicted probabilities (N, classes)."""
    from sklearn.metrics import accuracy_score, classification_report, confusion_matrix, f1_score, log_loss

    y_true = np.asarray(y_true, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    # Softmax computed in bf16/fp32 sums to 1 only up to rounding; renormalise in float64 so
    # the log-loss is exact and scikit-learn does not warn.
    probs = probs / probs.sum(axis=1, keepdims=True)
    y_pred = probs.argmax(axis=1)
    labels = list(range(len(names)))
    rep = classification_report(y_true, y_pred, labels=labels, target_names=list(names),
                                output_dict=True, zero_division=0)
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "loss": float(log_loss(y_true, probs, labels=labels)),
        "macro_f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
        "weighted_f1": float(f1_score(y_true, y_pred, average="weighted", zero_division=0)),
        "per_class": {n: {"precision": float(rep[n]["precision"]), "recall": float(rep[n]["recall"]),
                          "f1": float(rep[n]["f1-score"]), "support": int(rep[n]["support"])} for n in names},
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
        "labels": list(names),
        "split": split,
        "n": int(len(y_true)),
    }


def classification_report_text(y_true: np.ndarray, probs: np.ndarray, names: Sequence[str]) -> str:
    """scikit-learn's text report (4 decimals) of the predictions argmax(probs)."""
    from sklearn.metrics import classification_report

    return classification_report(np.asarray(y_true), np.asarray(probs).argmax(axis=1), labels=list(range(len(names))),
                                 target_names=list(names), digits=4, zero_division=0)


def report_file_text(experiment: str, trial_id: str, m: dict[str, Any], report: str) -> str:
    """classification_report.txt: a two-line headline above scikit-learn's report."""
    head = (f"fersearch {experiment}: trial {trial_id} retrained, {m['split']} split, n={m['n']}\n"
            f"accuracy {acc(m['accuracy'])}  loss {acc(m['loss'])}  macro F1 {acc(m['macro_f1'])}  "
            f"weighted F1 {acc(m['weighted_f1'])}\n\n")
    return head + report


def predictions_frame(labels: np.ndarray, probs: np.ndarray, names: Sequence[str],
                      tta_probs: np.ndarray | None = None) -> pd.DataFrame:
    """One row per evaluated image (in split order): true and predicted emotion, probabilities."""
    names = list(names)
    df = pd.DataFrame({"true": [names[i] for i in labels], "predicted": [names[i] for i in probs.argmax(1)]})
    if tta_probs is not None:
        df["predicted_tta"] = [names[i] for i in tta_probs.argmax(1)]
    for j, n in enumerate(names):
        df[f"p_{n}"] = probs[:, j]
    return df


def seed_summary(seed_runs: list[dict[str, Any]], kept_seed: int) -> dict[str, Any]:
    """metrics.json's `seeds`: mean, sample std and values of each figure over the seed runs."""
    def stats(key: str) -> dict[str, Any]:
        values = [r[key] for r in seed_runs]
        return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                "values": values}

    return {"n": len(seed_runs), "seeds": [r["seed"] for r in seed_runs], "kept_seed": kept_seed,
            "kept_by": "best val_acc", "std": "sample (n-1)",
            "val_acc": stats("best_val_acc"), "accuracy": stats("accuracy"), "macro_f1": stats("macro_f1")}
