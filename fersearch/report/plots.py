"""The five plots of `fersearch best --evaluate`: confusion matrices (counts, normalised), the
retrain's learning curves, every trial's validation curve, each hyperparameter against the
best val_acc, and Optuna's importance estimates.

Plots use matplotlib's object API with the Agg canvas (never pyplot's global state), so
importing this module never changes a notebook's backend; seaborn's style applies inside
each plotting function only.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ..fmt import plain
from ..results.experiment import PARAM_PREFIX, TrialStatus
from .boundaries import is_bool

if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution

# One colour per status of the vocabulary (a test checks every member has one); the best trial is green.
STATUS_COLORS = {TrialStatus.COMPLETED: "#1f77b4", TrialStatus.STOPPED: "#ff7f0e", TrialStatus.FAILED: "#d62728",
                 TrialStatus.DIVERGED: "#9467bd", TrialStatus.RUNNING: "#7f7f7f", TrialStatus.PENDING: "#bbbbbb"}
DPI = 110


def _styled(style: str = "whitegrid"):
    """Draw the decorated plot inside seaborn's style contexts (local, not global: axes read
    the style when they are created, so the whole plotting function runs inside it)."""

    def wrap(fn):
        @functools.wraps(fn)
        def inner(*args, **kwargs):
            import seaborn as sns

            with sns.axes_style(style), sns.plotting_context("notebook"):
                return fn(*args, **kwargs)

        return inner

    return wrap


def _figure(w: float, h: float):
    """A fresh Figure on the Agg canvas (no pyplot, no global backend)."""
    from matplotlib.figure import Figure

    return Figure(figsize=(w, h), dpi=DPI)


def _save(fig, path: Path) -> Path:
    fig.savefig(path, dpi=DPI, bbox_inches="tight", facecolor="white")
    return path


@_styled("white")
def plot_confusion_matrix(cm: Sequence[Sequence[int]], names: Sequence[str], path: Path,
                          normalized: bool = False, title: str = "") -> Path:
    """Seaborn heatmap, Blues, annotated; rows = true class. `normalized` divides each row by
    its support, so the diagonal reads as per-class recall."""
    import seaborn as sns

    counts = np.asarray(cm, dtype=float)
    support = counts.sum(axis=1, keepdims=True)
    values = np.divide(counts, support, out=np.full_like(counts, np.nan), where=support > 0) if normalized else counts
    fig = _figure(7.2, 6.0)
    ax = fig.add_subplot()
    sns.heatmap(values, ax=ax, cmap="Blues", annot=True, fmt=".2f" if normalized else ".0f",
                vmin=0, vmax=1 if normalized else None, square=True, linewidths=0.5, linecolor="white",
                xticklabels=list(names), yticklabels=[f"{n} ({int(s)})" for n, s in zip(names, support[:, 0])],
                cbar_kws={"label": "share of the true class" if normalized else "images", "shrink": 0.8},
                annot_kws={"fontsize": 10})
    ax.set_xlabel("Predicted", fontsize=12, labelpad=8)
    ax.set_ylabel("True (support)", fontsize=12, labelpad=8)
    ax.tick_params(axis="x", labelrotation=35)
    ax.tick_params(axis="y", labelrotation=0)
    for lbl in ax.get_xticklabels():
        lbl.set_horizontalalignment("right")
    ax.set_title(title or ("Confusion matrix, normalised by true class (diagonal = recall)" if normalized
                           else "Confusion matrix (counts)"), fontsize=12, pad=10)
    return _save(fig, path)


@_styled("whitegrid")
def plot_learning_curves(histories: Sequence[Sequence[dict]], path: Path, kept: int = 0,
                         labels: Sequence[str] | None = None) -> Path:
    """Loss and accuracy per epoch, train and validation; with several seeds the kept run is
    drawn bold and the others faint. A dotted line marks the epoch whose weights were kept."""
    fig = _figure(11, 4.2)
    ax_loss, ax_acc = fig.subplots(1, 2)
    for i, hist in enumerate(histories):
        h = pd.DataFrame(list(hist))
        if h.empty:
            continue
        main = i == kept
        alpha, lw = (1.0, 2.2) if main else (0.35, 1.0)
        tag = "" if len(histories) == 1 else f" ({labels[i] if labels else f'run {i + 1}'})"
        for ax, key in ((ax_loss, "loss"), (ax_acc, "acc")):
            ax.plot(h["epoch"], h[f"train_{key}"], color="#1f77b4", alpha=alpha, lw=lw,
                    label=f"train{tag}" if main or len(histories) <= 3 else None)
            ax.plot(h["epoch"], h[f"val_{key}"], color="#d62728", alpha=alpha, lw=lw,
                    label=f"validation{tag}" if main or len(histories) <= 3 else None)
        if main:
            best_epoch = int(h.loc[h["val_acc"].idxmax(), "epoch"])
            for ax in (ax_loss, ax_acc):
                ax.axvline(best_epoch, color="#444444", ls=":", lw=1.2)
            right_half = best_epoch > (h["epoch"].min() + h["epoch"].max()) / 2
            ax_acc.annotate(f"kept: epoch {best_epoch}\nval_acc {h['val_acc'].max():.3f}",
                            xy=(best_epoch, h["val_acc"].max()), xytext=(-6 if right_half else 6, -28),
                            textcoords="offset points", ha="right" if right_half else "left",
                            fontsize=9, color="#444444",
                            bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": "none", "alpha": 0.85})
    ax_loss.set(title="Loss (cross-entropy)", xlabel="epoch", ylabel="loss")
    ax_acc.set(title="Accuracy", xlabel="epoch", ylabel="accuracy")
    for ax in (ax_loss, ax_acc):
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.legend(fontsize=8, loc="best")
    return _save(fig, path)


@_styled("whitegrid")
def plot_trial_curves(history: pd.DataFrame, trials: pd.DataFrame, path: Path, rungs: Sequence[int] = (),
                      best: str | None = None, seed_trial: str | None = None) -> Path:
    """Validation accuracy per epoch for every trial, coloured by how it ended; ASHA's rungs
    are the vertical lines where stopped trials end."""
    fig = _figure(10, 4.8)
    ax = fig.add_subplot()
    status = dict(zip(trials["trial_id"].astype(str), trials["status"].astype(str)))
    for tid, h in history.sort_values("epoch").groupby("trial_id", sort=False):
        tid = str(tid)
        st = status.get(tid, TrialStatus.RUNNING)
        is_best, is_seed = tid == best, tid == seed_trial
        ax.plot(h["epoch"], h["val_acc"], color="#2ca02c" if is_best else STATUS_COLORS.get(st, "#7f7f7f"),
                lw=2.6 if is_best else 1.2, alpha=1.0 if is_best or is_seed else 0.7,
                ls="--" if is_seed and not is_best else "-", marker="o", ms=3, zorder=3 if is_best else 2)
        last = h.iloc[-1]
        if st == TrialStatus.STOPPED:
            ax.plot(last["epoch"], last["val_acc"], marker="x", color="#ff7f0e", ms=7, mew=2)
    for r in rungs:
        ax.axvline(r, color="#888888", ls="--", lw=0.9, zorder=1)
        ax.annotate(f"ASHA rung {r}", xy=(r, 1), xycoords=("data", "axes fraction"), xytext=(3, -12),
                    textcoords="offset points", fontsize=8, color="#666666")
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=c, lw=1.5, label=s.value) for s, c in STATUS_COLORS.items()
               if s in status.values()]
    handles.append(Line2D([], [], color="#2ca02c", lw=2.6, label=f"best ({best})"))
    if seed_trial and seed_trial != best:
        handles.append(Line2D([], [], color="#444444", ls="--", lw=1.2, label=f"seed config ({seed_trial})"))
    handles.append(Line2D([], [], color="#ff7f0e", marker="x", ls="", mew=2, label="stopped by ASHA"))
    ax.legend(handles=handles, fontsize=8, loc="lower right")
    ax.set(title="Validation accuracy per epoch, every trial", xlabel="epoch", ylabel="val_acc")
    ax.xaxis.get_major_locator().set_params(integer=True)
    return _save(fig, path)


@_styled("whitegrid")
def plot_param_scatter(trials: pd.DataFrame, params: Sequence[str], path: Path, best: str | None,
                       distributions: Mapping[str, BaseDistribution], boundary: Sequence[str] = ()) -> Path:
    """Best val_acc of every trial against each hyperparameter; the winner is a star and a
    parameter whose best value is on the boundary of the space has a red title."""
    ncols = min(3, max(1, len(params)))
    nrows = max(1, math.ceil(len(params) / ncols))
    fig = _figure(4.0 * ncols, 3.1 * nrows)
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    scored = trials[trials["best_val_acc"].notna()]
    for ax, p in zip(axes, params):
        _param_panel(ax, scored, p, best, distributions.get(p), p in boundary)
    for ax in axes[len(params):]:
        ax.set_visible(False)
    fig.suptitle("Best validation accuracy of each trial against each hyperparameter", fontsize=12)
    _status_legend(fig, set(scored["status"].astype(str)))
    # rect's top leaves the suptitle its own band: tight_layout alone lets it overlap the first panel's title
    height = fig.get_figheight()
    fig.tight_layout(rect=(0, 0.45 / height, 1, 1 - 0.4 / height))
    return _save(fig, path)


def _log_axis(ax) -> None:
    """Log x axis labelled 1-2-5 in plain numbers (matplotlib's default crowds 2x10^2 labels)."""
    from matplotlib import ticker

    ax.set_xscale("log")
    ax.xaxis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(ticker.NullFormatter())


def _status_legend(fig, statuses: set[str]) -> None:
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], marker="o", ls="", color=c, label=s.value) for s, c in STATUS_COLORS.items()
               if s in statuses]
    handles.append(Line2D([], [], marker="*", ls="", ms=14, color="#2ca02c", mec="black", label="best trial"))
    fig.legend(handles=handles, loc="lower center", bbox_to_anchor=(0.5, 0.0), fontsize=9, ncol=len(handles),
               frameon=False)


def _param_panel(ax, scored: pd.DataFrame, p: str, best: str | None, dist: Any, on_boundary: bool) -> None:
    col = scored[PARAM_PREFIX + p]
    present = col.notna()
    x_raw, y = col[present], scored.loc[present, "best_val_acc"].astype(float)
    colors = [STATUS_COLORS.get(s, "#7f7f7f") for s in scored.loc[present, "status"]]
    nums = pd.to_numeric(x_raw, errors="coerce")
    categorical = (dist is not None and hasattr(dist, "choices")) or nums.isna().any() \
        or is_bool(x_raw)
    if categorical:
        cats = sorted({str(v) for v in x_raw}, key=lambda s: (_num_or_inf(s), s))
        if dist is not None and hasattr(dist, "choices"):
            cats = [str(plain(c)) for c in dist.choices]
        pos = {c: i for i, c in enumerate(cats)}
        x = np.array([pos.get(str(plain(v)), 0) for v in x_raw], dtype=float)
        x += np.random.default_rng(0).uniform(-0.12, 0.12, len(x))
        ax.set_xticks(range(len(cats)), cats)
        ax.set_xlim(-0.5, len(cats) - 0.5)
    else:
        x = nums.to_numpy(dtype=float)
        low = getattr(dist, "low", np.nanmin(x)) if len(x) else 0
        high = getattr(dist, "high", np.nanmax(x)) if len(x) else 1
        if getattr(dist, "log", False) or (low > 0 and high / max(low, 1e-300) >= 100):
            _log_axis(ax)
        if dist is not None and hasattr(dist, "low"):
            ax.axvspan(dist.low, dist.high, color="#eef3fa", zorder=0)
            pad = (dist.high - dist.low) * 0.04 if ax.get_xscale() == "linear" else 0
            ax.set_xlim(dist.low - pad, dist.high + pad) if ax.get_xscale() == "linear" else \
                ax.set_xlim(dist.low / 1.25, dist.high * 1.25)
    ax.scatter(x, y, c=colors, s=28, alpha=0.85, edgecolor="white", linewidth=0.5, zorder=3)
    if best is not None:
        is_best = (scored.loc[present, "trial_id"].astype(str) == best).to_numpy()
        if is_best.any():
            ax.scatter(x[is_best], y[is_best], marker="*", s=260, color="#2ca02c", edgecolor="black", zorder=4)
    ax.set_title(p + ("  (best at boundary)" if on_boundary else ""), fontsize=10,
                 color="#c0392b" if on_boundary else "black", fontweight="bold" if on_boundary else "normal")
    ax.set_ylabel("best val_acc", fontsize=9)
    ax.margins(y=0.15)
    ax.tick_params(labelsize=8)


@_styled("whitegrid")
def plot_importance(importance: dict[str, dict[str, float]], path: Path) -> Path:
    """Horizontal bars: each evaluator's normalised importance per hyperparameter."""
    df = pd.DataFrame(importance).fillna(0.0)
    df = df.sort_values(df.columns[0], ascending=True)
    fig = _figure(7.5, 0.45 * len(df) + 1.6)
    ax = fig.add_subplot()
    height = 0.8 / max(1, len(df.columns))
    palette = ["#1f77b4", "#9467bd", "#8c564b"]
    for i, name in enumerate(df.columns):
        ax.barh(np.arange(len(df)) + 0.4 - height / 2 - i * height, df[name], height=height,
                color=palette[i % len(palette)], label=name)
    ax.set_yticks(np.arange(len(df)), df.index)
    ax.set(xlabel="importance (sums to 1 per evaluator)", title="Hyperparameter importance (Optuna)")
    ax.legend(fontsize=9, loc="lower right")
    return _save(fig, path)


def _num_or_inf(s: str) -> float:
    try:
        return float(s)
    except ValueError:
        return math.inf
