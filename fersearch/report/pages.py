"""Test-set metrics, the plots, and the report pages of `fersearch best --evaluate`.

Everything here works from plain arrays, dicts and DataFrames (no training), so the
figures in metrics.json are scikit-learn's on the saved predictions and can be checked
against them. Plots use matplotlib's object API with the Agg canvas (never pyplot's
global state), so importing this module never changes a notebook's backend.
"""

from __future__ import annotations

import base64
import functools
import html
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from ..io import atomic_write_text

STATUS_COLORS = {"completed": "#1f77b4", "stopped": "#ff7f0e", "failed": "#d62728",
                 "running": "#7f7f7f", "pending": "#bbbbbb"}
DPI = 110


# ==================================================================== metrics
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
    from sklearn.metrics import classification_report

    return classification_report(np.asarray(y_true), np.asarray(probs).argmax(axis=1), labels=list(range(len(names))),
                                 target_names=list(names), digits=4, zero_division=0)


# ==================================================================== plots
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

    cm = np.asarray(cm, dtype=float)
    support = cm.sum(axis=1, keepdims=True)
    values = np.divide(cm, support, out=np.full_like(cm, np.nan), where=support > 0) if normalized else cm
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
        st = status.get(tid, "running")
        is_best, is_seed = tid == best, tid == seed_trial
        ax.plot(h["epoch"], h["val_acc"], color="#2ca02c" if is_best else STATUS_COLORS.get(st, "#7f7f7f"),
                lw=2.6 if is_best else 1.2, alpha=1.0 if is_best or is_seed else 0.7,
                ls="--" if is_seed and not is_best else "-", marker="o", ms=3, zorder=3 if is_best else 2)
        last = h.iloc[-1]
        if st == "stopped":
            ax.plot(last["epoch"], last["val_acc"], marker="x", color="#ff7f0e", ms=7, mew=2)
    for i, r in enumerate(rungs):
        ax.axvline(r, color="#888888", ls="--", lw=0.9, zorder=1)
        ax.annotate(f"ASHA rung {r}", xy=(r, 1), xycoords=("data", "axes fraction"), xytext=(3, -12),
                    textcoords="offset points", fontsize=8, color="#666666")
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=STATUS_COLORS[s], lw=1.5, label=s)
               for s in ("completed", "stopped", "failed", "running") if s in status.values()]
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
                       distributions: dict[str, Any], boundary: Sequence[str] = ()) -> Path:
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
    fig.tight_layout(rect=(0, 0.45 / fig.get_figheight(), 1, 1))
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

    handles = [Line2D([], [], marker="o", ls="", color=c, label=s) for s, c in STATUS_COLORS.items() if s in statuses]
    handles.append(Line2D([], [], marker="*", ls="", ms=14, color="#2ca02c", mec="black", label="best trial"))
    fig.legend(handles=handles, loc="lower center", bbox_to_anchor=(0.5, 0.0), fontsize=9, ncol=len(handles), frameon=False)


def _param_panel(ax, scored: pd.DataFrame, p: str, best: str | None, dist: Any, on_boundary: bool) -> None:
    col = scored[f"config/{p}"]
    present = col.notna()
    x_raw, y = col[present], scored.loc[present, "best_val_acc"].astype(float)
    colors = [STATUS_COLORS.get(s, "#7f7f7f") for s in scored.loc[present, "status"]]
    nums = pd.to_numeric(x_raw, errors="coerce")
    categorical = (dist is not None and hasattr(dist, "choices")) or nums.isna().any() \
        or set(map(str, x_raw.unique())) <= {"True", "False"}
    if categorical:
        cats = sorted({str(v) for v in x_raw}, key=lambda s: (_num_or_inf(s), s))
        if dist is not None and hasattr(dist, "choices"):
            cats = [str(_norm(c)) for c in dist.choices]
        pos = {c: i for i, c in enumerate(cats)}
        x = np.array([pos.get(str(_norm(v)), 0) for v in x_raw], dtype=float)
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


def _norm(v: Any) -> Any:
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return v


# ==================================================================== pages
@dataclass
class ReportContext:
    """What the report pages show; built by fersearch.evaluation."""

    experiment: str
    out_dir: Path
    metrics: dict[str, Any]
    config: dict[str, Any]  # the retrained configuration (TrainConfig.to_dict())
    config_diff: dict[str, tuple[Any, Any]]  # field -> (seed value, winner value)
    best: dict[str, Any]  # trial_id, best_val_acc, best_epoch, epochs, status
    seed_runs: list[dict[str, Any]]  # seed, best_val_acc, best_epoch, epochs, accuracy, kept
    commands: dict[str, str]  # title -> command
    provenance: dict[str, Any]
    analysis: Any = None  # fersearch.analysis.SearchAnalysis
    tta_metrics: dict[str, Any] | None = None
    images: dict[str, str] = field(default_factory=dict)  # title -> file name in out_dir
    notes: list[str] = field(default_factory=list)


def write_pages(ctx: ReportContext) -> tuple[Path, Path]:
    """report.html (self-contained: images as data URIs) and report.md (relative image links)."""
    html_path, md_path = ctx.out_dir / "report.html", ctx.out_dir / "report.md"
    atomic_write_text(html_path, render_html(ctx))
    atomic_write_text(md_path, render_markdown(ctx))
    return html_path, md_path


def _pct(v: float | None) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.2f}%"


def _f4(v: Any) -> str:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{float(v):.4f}"


def headline(ctx: ReportContext) -> list[tuple[str, str, str]]:
    """(label, value, detail) figures shown at the top of both pages."""
    m, t = ctx.metrics, ctx.tta_metrics
    rows = [
        (f"{m['split']} accuracy", _pct(m["accuracy"]), f"{_f4(m['accuracy'])} on n={m['n']}"),
        ("macro F1", _f4(m["macro_f1"]), "mean over emotions"),
        ("weighted F1", _f4(m["weighted_f1"]), "weighted by support"),
        (f"{m['split']} loss", _f4(m["loss"]), "cross-entropy"),
    ]
    if t:
        rows.append(("accuracy with flip TTA", _pct(t["accuracy"]), f"{_f4(t['accuracy'])}; macro F1 {_f4(t['macro_f1'])}"))
    seeds = m.get("seeds")
    if seeds and seeds.get("n", 1) > 1:
        a = seeds["accuracy"]
        rows.append((f"{seeds['n']} seeds", f"{100 * a['mean']:.1f}% ± {100 * a['std']:.1f}",
                     f"{m['split']} accuracy mean ± std; kept seed {seeds['kept_seed']}"))
    retrain = f"; retrained {_f4(m['val_acc'])}" if "val_acc" in m else ""
    rows.append(("search val_acc", _f4(ctx.best.get("best_val_acc")),
                 f"trial {ctx.best.get('trial_id')}, its best epoch{retrain}"))
    return rows


def class_notes(m: dict[str, Any]) -> list[str]:
    """Plain words for what a reader would otherwise have to spot in the table."""
    pc = m["per_class"]
    never = [f"{n} ({v['support']} {m['split']} images)" for n, v in pc.items() if v["support"] and v["precision"] == 0
             and v["recall"] == 0]
    ranked = sorted((v["f1"], n) for n, v in pc.items() if v["support"])
    out = []
    if never:
        out.append("Never predicted correctly: " + ", ".join(never) + ".")
    if len(ranked) > 1:
        out.append(f"Best recognised: {ranked[-1][1]} (F1 {ranked[-1][0]:.2f}); hardest: "
                   + ", ".join(f"{n} (F1 {f:.2f})" for f, n in ranked[:2]) + ".")
    return out


def per_class_table(ctx: ReportContext) -> pd.DataFrame:
    rows = []
    for name, v in ctx.metrics["per_class"].items():
        row = {"emotion": name, "precision": v["precision"], "recall": v["recall"], "f1": v["f1"], "support": v["support"]}
        if ctx.tta_metrics:
            row["f1 (TTA)"] = ctx.tta_metrics["per_class"][name]["f1"]
        rows.append(row)
    return pd.DataFrame(rows)


def _html_table(df: pd.DataFrame, float_fmt=_f4, highlight_first: bool = False, css: str = "") -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    body = []
    for i, (_, row) in enumerate(df.iterrows()):
        cells = "".join(f"<td>{html.escape(float_fmt(v) if isinstance(v, float) else str(v))}</td>" for v in row)
        body.append(f"<tr{' class=hl' if highlight_first and i == 0 else ''}>{cells}</tr>")
    cls = f" class='{css}'" if css else ""
    return f"<table{cls}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _md_table(df: pd.DataFrame, float_fmt=_f4) -> str:
    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    for _, row in df.iterrows():
        lines.append("| " + " | ".join(float_fmt(v) if isinstance(v, float) else str(v) for v in row) + " |")
    return "\n".join(lines)


def _config_table(ctx: ReportContext) -> pd.DataFrame:
    rows = [{"key": k, "value": _short(v), "seed default": _short(ctx.config_diff[k][0]) if k in ctx.config_diff else ""}
            for k, v in ctx.config.items()]
    return pd.DataFrame(rows)


def _short(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_short(x) for x in v) + "]"
    return str(v)


def _seed_table(ctx: ReportContext) -> pd.DataFrame:
    return pd.DataFrame([{"seed": r["seed"], "val_acc (best epoch)": r["best_val_acc"], "best epoch": r["best_epoch"],
                          "epochs run": r["epochs"], f"{ctx.metrics['split']} accuracy": r["accuracy"],
                          "kept": "yes" if r["kept"] else ""} for r in ctx.seed_runs])


def search_summary(ctx: ReportContext) -> list[str]:
    """Plain sentences about the search, shared by both pages."""
    a = ctx.analysis
    if a is None:
        return []
    total = len(a.trials)
    counts = ", ".join(f"{n} {s}" for s, n in sorted(a.counts.items(), key=lambda kv: -kv[1]))
    out = [f"{total} trials: {counts}. Each trial is judged by its best validation accuracy over its "
           f"epochs (Ray's default scope is the last epoch)."]
    out.append(f"Failed: {a.counts.get('failed', 0)} of {total} ({100 * a.failed_share:.0f}%); diverged "
               f"(non-finite loss, or training loss ending above its start): {len(a.diverged)}"
               + (f" ({', '.join(a.diverged)})." if a.diverged else "."))
    if a.seed_trial and a.seed_trial == a.best_trial:
        out.append(f"The seed configuration (trial {a.seed_trial}) won the search: no proposed configuration beat "
                   "the seed CNN on validation accuracy within this budget.")
    elif a.seed_trial:
        srow = a.trials[a.trials["trial_id"].astype(str) == a.seed_trial].iloc[0]
        gain = ctx.best.get("best_val_acc", float("nan")) - float(srow["best_val_acc"])
        out.append(f"The seed configuration ran as trial {a.seed_trial}: best val_acc {_f4(float(srow['best_val_acc']))} "
                   f"({srow['status']}, {int(srow['epochs']) if pd.notna(srow['epochs']) else '?'} epochs) against the "
                   f"winner's {_f4(ctx.best.get('best_val_acc'))} ({'+' if gain >= 0 else ''}{100 * gain:.2f} points).")
    else:
        out.append("The seed configuration was not among the trials, so there is no seed baseline from the search.")
    basis = ("the search space's declared ranges" if a.boundary_basis == "declared"
             else "the range of values tried (the space's declared ranges were not available)")
    if a.boundaries:
        out.append(f"Boundary check against {basis}: " + "; ".join(b.message() for b in a.boundaries) + ".")
    else:
        out.append(f"Boundary check against {basis}: no best value sits on a boundary.")
    if a.rungs:
        out.append(f"ASHA rungs at epochs {', '.join(map(str, a.rungs))}: trials below the top share there were stopped.")
    return out


CSS = """
body{font-family:-apple-system,Segoe UI,Roboto,Helvetica,Arial,sans-serif;margin:0;background:#f5f6f8;color:#222}
main{max-width:1180px;margin:0 auto;padding:24px 28px 60px;background:#fff}
h1{margin:0 0 4px;font-size:26px} h2{margin-top:34px;border-bottom:2px solid #e3e6ea;padding-bottom:6px;font-size:20px}
.sub{color:#666;margin:0 0 18px}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(145px,1fr));gap:12px;margin:16px 0}
.card{background:#f0f5fb;border:1px solid #d7e3f1;border-radius:8px;padding:10px 14px}
.card .v{font-size:24px;font-weight:600;color:#1f4e89} .card .l{font-size:13px;color:#333;text-transform:uppercase;letter-spacing:.03em}
.card .d{font-size:12px;color:#666}
table{border-collapse:collapse;margin:10px 0;font-size:14px} th,td{border:1px solid #dde1e6;padding:4px 10px;text-align:right}
th{background:#f0f2f5} td:first-child,th:first-child{text-align:left} tr.hl td{background:#eaf6ea;font-weight:600}
table.text td,table.text th{text-align:left} .tables{display:flex;flex-wrap:wrap;gap:24px;align-items:flex-start}
img{max-width:100%;height:auto;border:1px solid #e3e6ea;border-radius:4px;margin:6px 0}
.row{display:flex;flex-wrap:wrap;gap:14px} .row figure{flex:1 1 480px;margin:0}
figcaption{font-size:13px;color:#555}
.warn{background:#fff4e5;border-left:4px solid #e67e22;padding:8px 12px;margin:8px 0}
.note{color:#555;font-size:14px}
pre{background:#1e2430;color:#e8e8e8;padding:10px 14px;border-radius:6px;overflow-x:auto;font-size:13px}
"""


def _img(ctx: ReportContext, title: str) -> str:
    name = ctx.images.get(title)
    if not name:
        return ""
    data = base64.b64encode((ctx.out_dir / name).read_bytes()).decode("ascii")
    return (f'<figure><img alt="{html.escape(title)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(title)}</figcaption></figure>")


def render_html(ctx: ReportContext) -> str:
    e = html.escape
    m = ctx.metrics
    parts = [f"<!doctype html><html lang=en><head><meta charset=utf-8><title>fersearch report: {e(ctx.experiment)}</title>",
             f"<meta name=viewport content='width=device-width,initial-scale=1'><style>{CSS}</style></head><body><main>",
             f"<h1>fersearch report: {e(ctx.experiment)}</h1>",
             f"<p class=sub>Best trial {e(str(ctx.best.get('trial_id')))} retrained from scratch and evaluated once on "
             f"the <b>{e(m['split'])}</b> split ({m['n']} images). Data: {e(str(ctx.provenance.get('data_path', '')))} "
             f"(sha256 {e(str(ctx.provenance.get('data_sha256', ''))[:12])}…).</p>"]
    parts += [f"<p class=warn>{e(n)}</p>" for n in ctx.notes]
    parts.append("<div class=cards>" + "".join(
        f"<div class=card><div class=l>{e(l)}</div><div class=v>{e(v)}</div><div class=d>{e(d)}</div></div>"
        for l, v, d in headline(ctx)) + "</div>")
    parts.append("<h2>Per-class metrics</h2>" + _html_table(per_class_table(ctx)))
    parts += [f"<p class=note>{e(n)}</p>" for n in class_notes(ctx.metrics)]
    if ctx.tta_metrics:
        t = ctx.tta_metrics
        parts.append(f"<p class=note>Horizontal-flip test-time augmentation (mean of the image and its mirror): accuracy "
                     f"{_f4(t['accuracy'])} vs {_f4(m['accuracy'])} plain; macro F1 {_f4(t['macro_f1'])} vs "
                     f"{_f4(m['macro_f1'])}; loss {_f4(t['loss'])} vs {_f4(m['loss'])}.</p>")
    parts.append("<div class=row>" + _img(ctx, "Confusion matrix") + _img(ctx, "Confusion matrix, normalised") + "</div>")
    parts.append("<h2>Training of the retrained model</h2>" + _img(ctx, "Learning curves"))
    if len(ctx.seed_runs) > 1:
        parts.append("<p class=note>Retrained with several seeds; the run with the best validation accuracy was kept "
                     "(std uses n-1).</p>" + _html_table(_seed_table(ctx)))
    cfg = _config_table(ctx)
    half = (len(cfg) + 1) // 2
    parts.append("<h2>Winning configuration</h2><p class=note>Values that differ from the seed CNN show the seed "
                 "default beside them.</p><div class=tables>" + _html_table(cfg.iloc[:half], css="text")
                 + _html_table(cfg.iloc[half:], css="text") + "</div>")
    parts.append("<h2>Reproduce</h2>" + "".join(f"<p class=note>{e(k)}</p><pre>{e(v)}</pre>"
                                                for k, v in ctx.commands.items()))
    parts += _html_search(ctx)
    parts.append("<h2>Provenance</h2>" + _html_table(pd.DataFrame(
        [{"item": k, "value": str(v)} for k, v in _flat_provenance(ctx).items()]), css="text"))
    parts.append("</main></body></html>\n")
    return "\n".join(parts)


def _html_search(ctx: ReportContext) -> list[str]:
    a = ctx.analysis
    if a is None:
        return []
    e = html.escape
    out = ["<h2>Search analysis</h2>"]
    out += [f"<p{' class=warn' if s.startswith('Boundary check') and a.boundaries else ''}>{e(s)}</p>"
            for s in search_summary(ctx)]
    out.append("<h3>Top trials</h3>" + _html_table(a.top(10), highlight_first=True))
    out.append(_img(ctx, "Validation accuracy against each hyperparameter"))
    out.append(_img(ctx, "Validation accuracy per epoch, every trial"))
    if a.importance:
        out.append("<h3>Hyperparameter importance</h3>" + _img(ctx, "Hyperparameter importance"))
        out.append(_html_table(_importance_table(a)))
    out.append(f"<p class=note>{e(a.importance_note)}</p>")
    return out


def _importance_table(a: Any) -> pd.DataFrame:
    df = pd.DataFrame(a.importance).fillna(0.0)
    df = df.sort_values(df.columns[0], ascending=False)
    return df.reset_index(names="hyperparameter")


def _flat_provenance(ctx: ReportContext) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for k, v in ctx.provenance.items():
        if isinstance(v, dict):
            flat.update({f"{k}.{kk}": vv for kk, vv in v.items()})
        else:
            flat[k] = v
    return flat


def render_markdown(ctx: ReportContext) -> str:
    m = ctx.metrics
    lines = [f"# fersearch report: {ctx.experiment}", "",
             f"Best trial {ctx.best.get('trial_id')} retrained from scratch and evaluated once on the **{m['split']}** "
             f"split ({m['n']} images). Data: `{ctx.provenance.get('data_path', '')}`.", ""]
    lines += [f"> {n}" for n in ctx.notes] + ([""] if ctx.notes else [])
    lines += [_md_table(pd.DataFrame(headline(ctx), columns=["figure", "value", "detail"])), ""]
    lines += ["## Per-class metrics", "", _md_table(per_class_table(ctx)), ""]
    notes = class_notes(ctx.metrics)
    lines += [*notes, ""] if notes else []
    lines += [f"![Confusion matrix]({ctx.images.get('Confusion matrix', '')}) "
              f"![Confusion matrix, normalised]({ctx.images.get('Confusion matrix, normalised', '')})", ""]
    lines += ["## Training of the retrained model", "", f"![Learning curves]({ctx.images.get('Learning curves', '')})", ""]
    if len(ctx.seed_runs) > 1:
        lines += [_md_table(_seed_table(ctx)), ""]
    lines += ["## Winning configuration", "", _md_table(_config_table(ctx)), "", "## Reproduce", ""]
    for k, v in ctx.commands.items():
        lines += [k, "", "```", v, "```", ""]
    a = ctx.analysis
    if a is not None:
        lines += ["## Search analysis", ""] + [f"- {s}" for s in search_summary(ctx)] + ["", "### Top trials", "",
                                                                                       _md_table(a.top(10)), ""]
        for title in ("Validation accuracy against each hyperparameter", "Validation accuracy per epoch, every trial",
                      "Hyperparameter importance"):
            if title in ctx.images:
                lines += [f"![{title}]({ctx.images[title]})", ""]
        if a.importance:
            lines += [_md_table(_importance_table(a)), ""]
        lines += [a.importance_note, ""]
    provenance = pd.DataFrame([{"item": k, "value": str(v)} for k, v in _flat_provenance(ctx).items()])
    lines += ["## Provenance", "", _md_table(provenance), ""]
    return "\n".join(lines)


# ==================================================================== terminal
def format_table(df: pd.DataFrame) -> str:
    # An integer parameter turns float in a column with gaps (filters_4 of 3-block trials): print it as ints.
    ints = {c: "{:.0f}".format for c in df.select_dtypes("float").columns
            if df[c].notna().any() and (df[c].dropna() % 1 == 0).all()}
    return df.to_string(index=False, formatters=ints, float_format=lambda v: f"{v:.4f}")


def format_best(bt: Any, n: int = 5) -> str:
    """What `fersearch best` prints: the winner, how it was judged, its config, the top trials."""
    from .analysis import config_diff

    a = bt.analysis
    counts = ", ".join(f"{c} {s}" for s, c in sorted(a.counts.items(), key=lambda kv: -kv[1]))
    planned = bt.meta.get("trials")
    started = f"{len(a.trials)} of {planned}" if planned and planned > len(a.trials) else f"{len(a.trials)}"
    state = ("search still running or interrupted: using what has reported so far" if bt.unfinished
             else "search finished")
    lines = [f"experiment {bt.name} ({bt.experiment}): {started} trials ({counts}); {state}",
             f"best trial {bt.trial_id} ({bt.status}): val_acc {bt.best_val_acc:.4f} at epoch {bt.best_epoch} "
             f"of {bt.epochs}",
             "  judged by each trial's best val_acc over its epochs (Ray's default scope is the last epoch)"]
    if bt.params:
        lines.append("search-space parameters: " + ", ".join(f"{k}={_short(v)}" for k, v in bt.params.items()))
    diff = config_diff(bt.config)
    changes = ", ".join(f"{k} {_short(old)} -> {_short(new)}" for k, (old, new) in diff.items())
    lines.append("differs from the seed CNN: " + (changes or "nothing (it is the seed configuration)"))
    lines += ["", f"top {min(n, len(a.trials))} trials by best val_acc:", format_table(bt.top(n))]
    return "\n".join(lines)


def format_evaluation(ev: Any) -> str:
    """What `fersearch best --evaluate` prints after training: figures, report, files."""
    m, t = ev.metrics, ev.tta_metrics
    lines = [f"{m['split']} split, n={m['n']}: accuracy {m['accuracy']:.4f}, loss {m['loss']:.4f}, "
             f"macro F1 {m['macro_f1']:.4f}, weighted F1 {m['weighted_f1']:.4f}"]
    if t:
        lines.append(f"with horizontal-flip TTA: accuracy {t['accuracy']:.4f}, loss {t['loss']:.4f}, "
                     f"macro F1 {t['macro_f1']:.4f}, weighted F1 {t['weighted_f1']:.4f}")
    s = m["seeds"]
    if s["n"] > 1:
        lines.append(f"{s['n']} seeds {s['seeds']}: {m['split']} accuracy {s['accuracy']['mean']:.4f} ± "
                     f"{s['accuracy']['std']:.4f}, val_acc {s['val_acc']['mean']:.4f} ± {s['val_acc']['std']:.4f} "
                     f"(mean ± sample std); kept seed {s['kept_seed']} (best val_acc)")
    lines += ["", ev.report.rstrip(), "", f"wrote {ev.out_dir}/:"]
    lines += [f"  {p.name}" for p in ev.files.values()]
    lines.append(f"open {ev.out_dir / 'report.html'} in a browser for the full report")
    return "\n".join(lines)


def format_predictions(preds: Sequence[Any]) -> str:
    rows = [{"image": p.image, "emotion": p.emotion, "confidence": p.confidence,
             **{k: v for k, v in p.probabilities.items()}} for p in preds]
    return pd.DataFrame(rows).to_string(index=False, float_format=lambda v: f"{v:.3f}")
