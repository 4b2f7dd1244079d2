"""The report page of `fersearch best --evaluate`: what it says, computed once from a ReportContext
into a page model (page_model.Page), then written as report.html (self-contained, images as data
URIs) and report.md (relative image links) by the model's two renderers.

Tables are pandas frames; numbers go through fersearch.fmt, so the pages show the same figures as
metrics.json and the terminal.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from ..fmt import acc, num, pct, plural
from ..io import atomic_write_text
from . import page_model as pm
from .analysis import proposal_source, proposal_sources
from .page_model import (
    Block,
    Cards,
    Command,
    Details,
    Figure,
    Figures,
    Mono,
    Page,
    Points,
    Section,
    Strong,
    Table,
    para,
)
from .tiebreak import tie_break_summary, tie_break_table, ties_summary, ties_table

if TYPE_CHECKING:
    from .analysis import SearchAnalysis


@dataclass
class ReportContext:
    """What the report pages show; built by bestdir.write_files."""

    experiment: str
    out_dir: Path
    metrics: dict[str, Any]
    config: dict[str, Any]  # the retrained configuration (TrainConfig.to_dict())
    config_diff: dict[str, tuple[Any, Any]]  # field -> (seed value, winner value)
    best: dict[str, Any]  # trial_id, best_val_acc, best_epoch, epochs, status
    seed_runs: list[dict[str, Any]]  # seed, best_val_acc, best_epoch, epochs, accuracy, kept
    commands: dict[str, str]  # title -> command
    provenance: dict[str, Any]
    analysis: SearchAnalysis | None = None
    tta_metrics: dict[str, Any] | None = None
    images: dict[str, str] = field(default_factory=dict)  # title -> file name in out_dir
    notes: list[str] = field(default_factory=list)
    pareto: pd.DataFrame | None = None  # report.pareto.front_table, when the trials recorded latency
    pareto_rule: str = ""  # the rule that picked the winner (report.pareto.rule_text)
    tie_break: dict[str, Any] | None = None  # metrics.json's tie_break (report.tiebreak), None without a tie


def write_pages(ctx: ReportContext) -> tuple[Path, Path]:
    """report.html (self-contained: images as data URIs) and report.md (relative image links)."""
    page = build_page(ctx)
    html_path, md_path = ctx.out_dir / "report.html", ctx.out_dir / "report.md"
    atomic_write_text(html_path, pm.render_html(page))
    atomic_write_text(md_path, pm.render_markdown(page))
    return html_path, md_path


# ---------------------------------------------------------------- what the page says
def headline(ctx: ReportContext) -> list[tuple[str, str, str]]:
    """(label, value, detail) figures shown at the top of both pages."""
    m, t = ctx.metrics, ctx.tta_metrics
    rows = [
        (f"{m['split']} accuracy", pct(m["accuracy"]), f"{acc(m['accuracy'])} on n={m['n']}"),
        ("macro F1", acc(m["macro_f1"]), "mean over emotions"),
        ("weighted F1", acc(m["weighted_f1"]), "weighted by support"),
        (f"{m['split']} loss", acc(m["loss"]), "cross-entropy"),
    ]
    if t:
        rows.append(("accuracy with flip TTA", pct(t["accuracy"]),
                     f"{acc(t['accuracy'])}; macro F1 {acc(t['macro_f1'])}"))
    seeds = m.get("seeds")
    if seeds and seeds.get("n", 1) > 1:
        a = seeds["accuracy"]
        rows.append((f"{seeds['n']} seeds", f"{100 * a['mean']:.1f}% ± {100 * a['std']:.1f}",
                     f"{m['split']} accuracy mean ± std; kept seed {seeds['kept_seed']}"))
    retrain = f"; retrained {acc(m['val_acc'])}" if "val_acc" in m else ""
    rows.append(("search val_acc", acc(ctx.best.get("best_val_acc")),
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


def tta_note(ctx: ReportContext) -> str:
    m, t = ctx.metrics, ctx.tta_metrics or {}
    return (f"Horizontal-flip test-time augmentation (mean of the image and its mirror): accuracy "
            f"{acc(t['accuracy'])} vs {acc(m['accuracy'])} plain; macro F1 {acc(t['macro_f1'])} vs "
            f"{acc(m['macro_f1'])}; loss {acc(t['loss'])} vs {acc(m['loss'])}.")


def search_summary(ctx: ReportContext) -> list[str]:
    """Plain sentences about the search, shared by both pages. The findings (the seed's result, the
    boundaries, the stops) are the diagnoses' (report.diagnose), stated in their table only."""
    a = ctx.analysis
    if a is None:
        return []
    total = len(a.trials)
    counts = ", ".join(f"{n} {s}" for s, n in sorted(a.counts.items(), key=lambda kv: -kv[1]))
    out = [f"{total} trials: {counts}. Each trial is judged by its best validation accuracy over its "
           f"epochs (Ray's default scope is the last epoch)."]
    out.append(f"Failed: {a.counts.get('failed', 0)} of {total} ({100 * a.failed_share:.0f}%); diverged "
               f"(a non-finite training loss ended the trial): {len(a.diverged)}"
               + (f" ({', '.join(a.diverged)})." if a.diverged else "."))
    if a.loss_rose:
        out.append(f"Loss rose (training loss ended above its first epoch's, finite; often too large a step): "
                   f"{len(a.loss_rose)} ({', '.join(a.loss_rose)}).")
    basis = ("the search space's declared ranges" if a.boundary_basis == "declared"
             else "the range of values tried (the space's declared ranges were not available: no Optuna study saved)")
    if not a.boundaries:  # a boundary found is a diagnosis (below)
        out.append(f"Boundary check against {basis}: no best value sits on a boundary that could be widened.")
    sources = proposal_sources(a.trials)
    if sources:
        winner = proposal_source(a.trials, str(ctx.best.get("trial_id")))
        out.append("Where the configurations came from (recipe: a warm-start point; prior: near one; incumbent: "
                   "a step from the best trial so far; tpe; random): "
                   + ", ".join(f"{n} {s}" for s, n in sources.items()) + f"; the winner: {winner or 'not said'}.")
    if a.rungs:
        out.append(f"ASHA rungs at epochs {', '.join(map(str, a.rungs))}: trials clearly below the top share there "
                   "(beyond the noise of the validation split) were stopped.")
    return out


def diagnosis_table(a: SearchAnalysis) -> pd.DataFrame:
    """The search's diagnoses (report.diagnose): what it saw and the flag to change."""
    return pd.DataFrame([{"diagnosis": d.message, "flag": d.flag or ""} for d in a.diagnoses])


WARN_KINDS = ("boundary", "noise-stop", "held", "still-improving")  # diagnoses drawn as warnings (orange)


def top_tables(a: SearchAnalysis, n: int = 10) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The top trials with the parameters that differ between them, and (parameter, value) for the
    ones the top trials share: the first fits the page, the second is shown on demand."""
    top = a.top(n)
    params = [p for p in a.params if p in top.columns]
    same = [p for p in params if len(top) > 1 and top[p].astype(str).nunique(dropna=False) == 1]
    shared = pd.DataFrame([{"hyperparameter": p, "value": top[p].iloc[0]} for p in same],
                          columns=["hyperparameter", "value"])
    return top.drop(columns=same), shared


TIES = "Ties with the best"


def tie_tables(ctx: ReportContext) -> list[tuple[str, pd.DataFrame | None]]:
    """The ties section, for both pages: (sentence, table or None) pairs; [] without an analysis."""
    if ctx.analysis is None:
        return []
    ties = ctx.analysis.ties
    listed = ties_table(ties) if ties is not None and ties.known and ties.tied else None
    out: list[tuple[str, pd.DataFrame | None]] = [(ties_summary(ties), listed)]
    if ctx.tie_break:
        out.append((tie_break_summary(ctx.tie_break) + ".", tie_break_table(ctx.tie_break)))
    return out


def per_class_table(ctx: ReportContext) -> pd.DataFrame:
    rows = []
    for name, v in ctx.metrics["per_class"].items():
        row = {"emotion": name, "precision": v["precision"], "recall": v["recall"], "f1": v["f1"],
               "support": v["support"]}
        if ctx.tta_metrics:
            row["f1 (TTA)"] = ctx.tta_metrics["per_class"][name]["f1"]
        rows.append(row)
    return pd.DataFrame(rows)


def config_table(ctx: ReportContext) -> pd.DataFrame:
    return pd.DataFrame([{"key": k, "value": num(v, 4),
                          "seed default": num(ctx.config_diff[k][0], 4) if k in ctx.config_diff else ""}
                         for k, v in ctx.config.items()])


def seed_table(ctx: ReportContext) -> pd.DataFrame:
    return pd.DataFrame([{"seed": r["seed"], "val_acc (best epoch)": r["best_val_acc"], "best epoch": r["best_epoch"],
                          "epochs run": r["epochs"], f"{ctx.metrics['split']} accuracy": r["accuracy"],
                          "kept": "yes" if r["kept"] else ""} for r in ctx.seed_runs])


def importance_table(a: SearchAnalysis) -> pd.DataFrame:
    df = pd.DataFrame(a.importance).fillna(0.0)
    df = df.sort_values(df.columns[0], ascending=False)
    return df.reset_index(names="hyperparameter")


def provenance_table(ctx: ReportContext) -> pd.DataFrame:
    flat: dict[str, Any] = {}
    for k, v in ctx.provenance.items():
        if isinstance(v, dict):
            flat.update({f"{k}.{kk}": vv for kk, vv in v.items()})
        else:
            flat[k] = v
    return pd.DataFrame([{"item": k, "value": str(v)} for k, v in flat.items()])


PARETO = "Accuracy against latency (Pareto front)"


def pareto_note(ctx: ReportContext) -> str:
    n = 0 if ctx.pareto is None else len(ctx.pareto)
    return (f"Picked trial {ctx.best.get('trial_id')} by the rule: {ctx.pareto_rule}. The front: the "
            f"{plural(n, 'trial')} no other trial beats on both best val_acc and latency "
            "(batch 1, one CPU thread, ONNX Runtime, median).")


# ---------------------------------------------------------------- the page, once
def figures(ctx: ReportContext, *titles: str) -> list[Figures]:
    """The plots of `titles` that were drawn, as one row ([] when none was)."""
    found = tuple(Figure(t, ctx.images[t]) for t in titles if ctx.images.get(t))
    return [Figures(found)] if found else []


def build_page(ctx: ReportContext) -> Page:
    """Every section and note of the report, in page order; both renderings show exactly this."""
    m = ctx.metrics
    sha = str(ctx.provenance.get("data_sha256", ""))[:12]
    blocks: list[Block] = [
        para(f"Best trial {ctx.best.get('trial_id')} retrained from scratch and evaluated once on the ",
             Strong(str(m["split"])), f" split ({m['n']} images). Data: ",
             Mono(str(ctx.provenance.get("data_path", ""))), f" (sha256 {sha}…).", kind="sub"),
        *(para(n, kind="warn") for n in ctx.notes),
        Cards(tuple(headline(ctx))),
    ]
    ties: list[Block] = []
    for i, (text, df) in enumerate(tie_tables(ctx)):
        ties += [para(text)] + ([Table(df, f"ties{i}")] if df is not None else [])
    if ties:
        blocks.append(Section(TIES, tuple(ties)))
    per_class: list[Block] = [Table(per_class_table(ctx), "per_class"), *(para(n) for n in class_notes(m))]
    if ctx.tta_metrics:
        per_class.append(para(tta_note(ctx)))
    blocks.append(Section("Per-class metrics", (*per_class, *figures(ctx, "Confusion matrix",
                                                                       "Confusion matrix, normalised"))))
    training: list[Block] = [*figures(ctx, "Learning curves")]
    if len(ctx.seed_runs) > 1:
        training += [para("Retrained with several seeds; the run with the best validation accuracy was kept "
                          "(std uses n-1)."), Table(seed_table(ctx), "seeds")]
    blocks.append(Section("Training of the retrained model", tuple(training)))
    blocks.append(Section("Winning configuration", (
        para("Values that differ from the seed CNN show the seed default beside them."),
        Table(config_table(ctx), "config", css="text", halves=True))))
    blocks.append(Section("Reproduce", tuple(Command(k, v) for k, v in ctx.commands.items())))
    if ctx.analysis is not None:
        blocks.append(search_section(ctx, ctx.analysis))
    if ctx.pareto is not None:
        blocks.append(Section(PARETO, (para(pareto_note(ctx)), Table(ctx.pareto, "pareto"), *figures(ctx, PARETO))))
    blocks.append(Section("Provenance", (Table(provenance_table(ctx), "provenance", css="text"),)))
    return Page(f"fersearch report: {ctx.experiment}", ctx.out_dir, tuple(blocks))


def search_section(ctx: ReportContext, a: SearchAnalysis) -> Section:
    blocks: list[Block] = [Points(tuple(search_summary(ctx)))]
    if a.diagnoses:
        warn = tuple("warn" if d.kind in WARN_KINDS else "" for d in a.diagnoses)
        blocks.append(Section("What the search saw", (Table(diagnosis_table(a), "diagnoses", css="text",
                                                            row_class=warn),), level=3))
    top, shared = top_tables(a)
    top_blocks: list[Block] = [para("The hyperparameters that differ between them; the winner first."),
                               Table(top, "top", highlight=True, wide=True)]
    if len(shared):
        top_blocks.append(Details(f"{plural(len(shared), 'hyperparameter')} the same in all {len(top)} top trials",
                                  Table(shared, "shared", css="text")))
    for title in ("Validation accuracy against each hyperparameter", "Validation accuracy per epoch, every trial"):
        top_blocks += figures(ctx, title)
    blocks.append(Section("Top trials", tuple(top_blocks), level=3))
    note = para(a.importance_note)
    if a.importance:
        blocks.append(Section("Hyperparameter importance", (*figures(ctx, "Hyperparameter importance"),
                                                            Table(importance_table(a), "importance"), note), level=3))
    else:
        blocks.append(note)
    return Section("Search analysis", tuple(blocks))
