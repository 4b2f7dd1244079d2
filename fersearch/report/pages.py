"""The report pages of `fersearch best --evaluate`: report.html (self-contained, images as data
URIs) and report.md (relative image links), from one ReportContext.

Tables are pandas frames rendered by pandas (Styler for HTML); numbers go through
fersearch.fmt, so the pages show the same figures as metrics.json and the terminal.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from pandas.io.formats.style import Styler

from ..fmt import acc, cells, num, pct, plural
from ..io import atomic_write_text
from .tiebreak import tie_break_summary, tie_break_table, ties_summary, ties_table


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
    analysis: Any = None  # report.analysis.SearchAnalysis
    tta_metrics: dict[str, Any] | None = None
    images: dict[str, str] = field(default_factory=dict)  # title -> file name in out_dir
    notes: list[str] = field(default_factory=list)
    pareto: pd.DataFrame | None = None  # report.pareto.front_table, when the trials recorded latency
    pareto_rule: str = ""  # the rule that picked the winner (report.pareto.rule_text)
    tie_break: dict[str, Any] | None = None  # metrics.json's tie_break (report.tiebreak), None without a tie


def write_pages(ctx: ReportContext) -> tuple[Path, Path]:
    """report.html (self-contained: images as data URIs) and report.md (relative image links)."""
    html_path, md_path = ctx.out_dir / "report.html", ctx.out_dir / "report.md"
    atomic_write_text(html_path, render_html(ctx))
    atomic_write_text(md_path, render_markdown(ctx))
    return html_path, md_path


# ---------------------------------------------------------------- what both pages say
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
    if a.rungs:
        out.append(f"ASHA rungs at epochs {', '.join(map(str, a.rungs))}: trials clearly below the top share there "
                   "(beyond the noise of the validation split) were stopped.")
    return out


def diagnosis_table(a: Any) -> pd.DataFrame:
    """The search's diagnoses (report.diagnose): what it saw and the flag to change."""
    return pd.DataFrame([{"diagnosis": d.message, "flag": d.flag or ""} for d in a.diagnoses])


WARN_KINDS = ("boundary", "noise-stop", "held", "still-improving")  # diagnoses drawn as warnings (orange)


def top_tables(a: Any, n: int = 10) -> tuple[pd.DataFrame, pd.DataFrame]:
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
    listed = ties is not None and ties.known and bool(ties.tied)
    out: list[tuple[str, pd.DataFrame | None]] = [(ties_summary(ties), ties_table(ties) if listed else None)]
    if ctx.tie_break:
        out.append((tie_break_summary(ctx.tie_break) + ".", tie_break_table(ctx.tie_break)))
    return out


# ---------------------------------------------------------------- tables (pandas frames)
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


def importance_table(a: Any) -> pd.DataFrame:
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


def html_table(df: pd.DataFrame, name: str, css: str = "", highlight_first: bool = False,
               row_class: list[str] | None = None) -> str:
    """`df` as an HTML table (pandas' Styler), numbers through fmt.cells; `name` makes the table's id.
    `row_class`: a CSS class per row ("" for none)."""
    styler = Styler(cells(df), uuid=name, cell_ids=False).hide(axis="index")
    styler = styler.format(escape="html").format_index(escape="html", axis=1)
    if (highlight_first or row_class) and len(df):
        marks = pd.DataFrame("", index=df.index, columns=df.columns)
        for i, c in enumerate(row_class or []):
            marks.iloc[i] = c
        if highlight_first:
            marks.iloc[0] = "hl"
        styler = styler.set_td_classes(marks)
    return styler.to_html(table_attributes=f'class="{css}"' if css else None)


def md_table(df: pd.DataFrame) -> str:
    """`df` as a Markdown table (pandas writes Markdown only through the optional tabulate)."""
    text = cells(df)
    lines = ["| " + " | ".join(map(str, text.columns)) + " |", "|" + "---|" * len(text.columns)]
    lines += ["| " + " | ".join(row) + " |" for row in text.itertuples(index=False)]
    return "\n".join(lines)


# ---------------------------------------------------------------- report.html
CSS = """
body{font-family:-apple-system,Segoe UI,Roboto,Helvetica,Arial,sans-serif;margin:0;background:#f5f6f8;color:#222}
main{max-width:1180px;margin:0 auto;padding:24px 28px 60px;background:#fff}
h1{margin:0 0 4px;font-size:26px} h2{margin-top:34px;border-bottom:2px solid #e3e6ea;padding-bottom:6px;font-size:20px}
.sub{color:#666;margin:0 0 18px}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(145px,1fr));gap:12px;margin:16px 0}
.card{background:#f0f5fb;border:1px solid #d7e3f1;border-radius:8px;padding:10px 14px}
.card .v{font-size:24px;font-weight:600;color:#1f4e89}
.card .l{font-size:13px;color:#333;text-transform:uppercase;letter-spacing:.03em}
.card .d{font-size:12px;color:#666}
table{border-collapse:collapse;margin:10px 0;font-size:14px}
th,td{border:1px solid #dde1e6;padding:4px 10px;text-align:right}
th{background:#f0f2f5} td:first-child,th:first-child{text-align:left} td.hl{background:#eaf6ea;font-weight:600}
table.text td,table.text th{text-align:left} .tables{display:flex;flex-wrap:wrap;gap:24px;align-items:flex-start}
img{max-width:100%;height:auto;border:1px solid #e3e6ea;border-radius:4px;margin:6px 0}
.row{display:flex;flex-wrap:wrap;gap:14px} .row figure{flex:1 1 480px;margin:0}
figcaption{font-size:13px;color:#555}
.warn{background:#fff4e5;border-left:4px solid #e67e22;padding:8px 12px;margin:8px 0} td.warn{background:#fff4e5}
.wide{overflow-x:auto;max-width:100%} details{margin:6px 0} summary{cursor:pointer;color:#1f4e89}
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


PARETO = "Accuracy against latency (Pareto front)"


def pareto_note(ctx: ReportContext) -> str:
    n = 0 if ctx.pareto is None else len(ctx.pareto)
    return (f"Picked trial {ctx.best.get('trial_id')} by the rule: {ctx.pareto_rule}. The front: the "
            f"{plural(n, 'trial')} no other trial beats on both best val_acc and latency "
            "(batch 1, one CPU thread, ONNX Runtime, median).")


def render_html(ctx: ReportContext) -> str:
    e = html.escape
    m = ctx.metrics
    parts = [f"<!doctype html><html lang=en><head><meta charset=utf-8>"
             f"<title>fersearch report: {e(ctx.experiment)}</title>",
             f"<meta name=viewport content='width=device-width,initial-scale=1'><style>{CSS}</style></head>"
             "<body><main>",
             f"<h1>fersearch report: {e(ctx.experiment)}</h1>",
             f"<p class=sub>Best trial {e(str(ctx.best.get('trial_id')))} retrained from scratch and evaluated once on "
             f"the <b>{e(m['split'])}</b> split ({m['n']} images). Data: {e(str(ctx.provenance.get('data_path', '')))} "
             f"(sha256 {e(str(ctx.provenance.get('data_sha256', ''))[:12])}…).</p>"]
    parts += [f"<p class=warn>{e(n)}</p>" for n in ctx.notes]
    parts.append("<div class=cards>" + "".join(
        f"<div class=card><div class=l>{e(label)}</div><div class=v>{e(v)}</div><div class=d>{e(d)}</div></div>"
        for label, v, d in headline(ctx)) + "</div>")
    if tie_tables(ctx):
        parts.append(f"<h2>{TIES}</h2>" + "".join(
            f"<p class=note>{e(text)}</p>" + (html_table(df, f"ties{i}") if df is not None else "")
            for i, (text, df) in enumerate(tie_tables(ctx))))
    parts.append("<h2>Per-class metrics</h2>" + html_table(per_class_table(ctx), "per_class"))
    parts += [f"<p class=note>{e(n)}</p>" for n in class_notes(ctx.metrics)]
    if ctx.tta_metrics:
        parts.append(f"<p class=note>{e(tta_note(ctx))}</p>")
    parts.append("<div class=row>" + _img(ctx, "Confusion matrix") + _img(ctx, "Confusion matrix, normalised")
                 + "</div>")
    parts.append("<h2>Training of the retrained model</h2>" + _img(ctx, "Learning curves"))
    if len(ctx.seed_runs) > 1:
        parts.append("<p class=note>Retrained with several seeds; the run with the best validation accuracy was kept "
                     "(std uses n-1).</p>" + html_table(seed_table(ctx), "seeds"))
    cfg = config_table(ctx)
    half = (len(cfg) + 1) // 2
    parts.append("<h2>Winning configuration</h2><p class=note>Values that differ from the seed CNN show the seed "
                 "default beside them.</p><div class=tables>" + html_table(cfg.iloc[:half], "config1", css="text")
                 + html_table(cfg.iloc[half:], "config2", css="text") + "</div>")
    parts.append("<h2>Reproduce</h2>" + "".join(f"<p class=note>{e(k)}</p><pre>{e(v)}</pre>"
                                                for k, v in ctx.commands.items()))
    parts += _html_search(ctx)
    if ctx.pareto is not None:
        parts.append(f"<h2>{PARETO}</h2><p class=note>{e(pareto_note(ctx))}</p>"
                     + html_table(ctx.pareto, "pareto", highlight_first=False) + _img(ctx, PARETO))
    parts.append("<h2>Provenance</h2>" + html_table(provenance_table(ctx), "provenance", css="text"))
    parts.append("</main></body></html>\n")
    return "\n".join(parts)


def _html_search(ctx: ReportContext) -> list[str]:
    a = ctx.analysis
    if a is None:
        return []
    e = html.escape
    out = ["<h2>Search analysis</h2>"]
    out += [f"<p>{e(s)}</p>" for s in search_summary(ctx)]
    if a.diagnoses:
        warn = ["warn" if d.kind in WARN_KINDS else "" for d in a.diagnoses]
        out.append("<h3>What the search saw</h3>" + html_table(diagnosis_table(a), "diagnoses", css="text",
                                                               row_class=warn))
    top, shared = top_tables(a)
    out.append("<h3>Top trials</h3><p class=note>The hyperparameters that differ between them; the winner "
               "first.</p><div class=wide>" + html_table(top, "top", highlight_first=True) + "</div>")
    if len(shared):
        out.append(f"<details><summary>{plural(len(shared), 'hyperparameter')} the same in all {len(top)} top "
                   "trials</summary>"
                   + html_table(shared, "shared", css="text") + "</details>")
    out.append(_img(ctx, "Validation accuracy against each hyperparameter"))
    out.append(_img(ctx, "Validation accuracy per epoch, every trial"))
    if a.importance:
        out.append("<h3>Hyperparameter importance</h3>" + _img(ctx, "Hyperparameter importance"))
        out.append(html_table(importance_table(a), "importance"))
    out.append(f"<p class=note>{e(a.importance_note)}</p>")
    return out


# ---------------------------------------------------------------- report.md
def render_markdown(ctx: ReportContext) -> str:
    m = ctx.metrics
    lines = [f"# fersearch report: {ctx.experiment}", "",
             f"Best trial {ctx.best.get('trial_id')} retrained from scratch and evaluated once on the **{m['split']}** "
             f"split ({m['n']} images). Data: `{ctx.provenance.get('data_path', '')}`.", ""]
    lines += [f"> {n}" for n in ctx.notes] + ([""] if ctx.notes else [])
    lines += [md_table(pd.DataFrame(headline(ctx), columns=["figure", "value", "detail"])), ""]
    if tie_tables(ctx):
        lines += [f"## {TIES}", ""]
        for text, df in tie_tables(ctx):
            lines += [text, ""] + ([md_table(df), ""] if df is not None else [])
    lines += ["## Per-class metrics", "", md_table(per_class_table(ctx)), ""]
    notes = class_notes(ctx.metrics)
    lines += [*notes, ""] if notes else []
    lines += [f"![Confusion matrix]({ctx.images.get('Confusion matrix', '')}) "
              f"![Confusion matrix, normalised]({ctx.images.get('Confusion matrix, normalised', '')})", ""]
    lines += ["## Training of the retrained model", "",
              f"![Learning curves]({ctx.images.get('Learning curves', '')})", ""]
    if len(ctx.seed_runs) > 1:
        lines += [md_table(seed_table(ctx)), ""]
    lines += ["## Winning configuration", "", md_table(config_table(ctx)), "", "## Reproduce", ""]
    for k, v in ctx.commands.items():
        lines += [k, "", "```", v, "```", ""]
    a = ctx.analysis
    if a is not None:
        lines += ["## Search analysis", ""] + [f"- {s}" for s in search_summary(ctx)]
        if a.diagnoses:
            lines += ["", "### What the search saw", "", md_table(diagnosis_table(a))]
        top, shared = top_tables(a)
        lines += ["", "### Top trials", "", md_table(top), ""]
        if len(shared):
            lines += [f"The same in all {len(top)} top trials: " + ", ".join(
                f"{k}={v}" for k, v in zip(shared["hyperparameter"], cells(shared)["value"])) + ".", ""]
        for title in ("Validation accuracy against each hyperparameter", "Validation accuracy per epoch, every trial",
                      "Hyperparameter importance"):
            if title in ctx.images:
                lines += [f"![{title}]({ctx.images[title]})", ""]
        if a.importance:
            lines += [md_table(importance_table(a)), ""]
        lines += [a.importance_note, ""]
    if ctx.pareto is not None:
        lines += [f"## {PARETO}", "", pareto_note(ctx), "", md_table(ctx.pareto), "",
                  f"![{PARETO}]({ctx.images.get(PARETO, '')})", ""]
    lines += ["## Provenance", "", md_table(provenance_table(ctx)), ""]
    return "\n".join(lines)
