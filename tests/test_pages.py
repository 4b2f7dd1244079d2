"""The report page is computed once (fersearch.report.pages.build_page) and rendered twice: report.html
and report.md carry the same sections in the same order and the same notes, and a section with
nothing to show is left out of both."""

from __future__ import annotations

import html
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fersearch.config import TrainConfig
from fersearch.report.diagnose import Diagnosis
from fersearch.report.page_model import Command, Para, Points, Section, render_html, render_markdown
from fersearch.report.pages import ReportContext, build_page, write_pages

LABELS = ["Angry", "Disgust", "Fear", "Happy", "Sad", "Surprise", "Neutral"]
IMAGES = ("Confusion matrix", "Confusion matrix, normalised", "Learning curves",
          "Validation accuracy against each hyperparameter", "Validation accuracy per epoch, every trial",
          "Hyperparameter importance", "Accuracy against latency (Pareto front)")


def _metrics(split: str = "test", shift: float = 0.0) -> dict:
    pc = {n: {"precision": 0.5 + i / 20 + shift, "recall": 0.4 + i / 25, "f1": 0.45 + i / 22 + shift, "support": 10 + i}
          for i, n in enumerate(LABELS)}
    pc["Disgust"] = {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 3}
    return {"split": split, "n": 91, "accuracy": 0.6123 + shift, "loss": 1.0321 - shift, "macro_f1": 0.5012 + shift,
            "weighted_f1": 0.5987 + shift, "per_class": pc, "val_acc": 0.6011,
            "seeds": {"n": 2, "seeds": [0, 1], "kept_seed": 1, "accuracy": {"mean": 0.61, "std": 0.004}}}


def _analysis() -> SimpleNamespace:
    """What the page reads of a report.analysis.SearchAnalysis, by hand: every optional part present."""
    trials = pd.DataFrame({"trial_id": ["t1", "t0", "t2"], "status": ["completed", "stopped", "failed"],
                           "best_val_acc": [0.61, 0.55, None], "config/lr": [1e-3, 1e-2, 1e-4],
                           "config/dense": [512, 512, 512]})
    return SimpleNamespace(
        trials=trials, params=["lr", "dense"], counts={"completed": 1, "stopped": 1, "failed": 1},
        failed_share=1 / 3, diverged=["t2"], loss_rose=["t0"], boundary_basis="declared", boundaries=[],
        rungs=[1, 3], ties=None, importance={"fanova": {"lr": 0.8, "dense": 0.2}},
        importance_note="Importance from the search's own Optuna study with the distributions it declared.",
        diagnoses=[Diagnosis("boundary", "lr = 0.001 sits near the low end of the declared range.", "--space"),
                   Diagnosis("seed", "The seed configuration was not among the trials.")],
        top=lambda n=10: trials.head(n).rename(columns=lambda c: c.removeprefix("config/")))


def _tie_break() -> dict:
    return {"rule": "highest mean val_acc", "ties_limit": 2, "left_out": ["t9"], "picked": "t1", "search_best": "t1",
            "changed": False, "retrained": ["t1", "t0"], "seeds_per_config": 2,
            "configs": [{"trial_id": t, "search_val_acc": v, "diff": d, "se": s, "val_acc": [v, v], "mean_val_acc": v,
                         "picked": t == "t1"} for t, v, d, s in (("t1", 0.61, None, None), ("t0", 0.60, -0.01, 0.02))]}


def full_context(out: Path) -> ReportContext:
    """A report with every part: notes, TTA, two seeds, ties and a tie-break, the search analysis, a Pareto front."""
    out.mkdir(parents=True, exist_ok=True)
    images = {}
    for i, title in enumerate(IMAGES):
        Image.fromarray(np.full((8, 8), 20 * i, np.uint8)).save(out / f"img{i}.png")
        images[title] = f"img{i}.png"
    cfg = TrainConfig.from_dict({"dense": 512, "lr": 1e-3})
    return ReportContext(
        experiment="page", out_dir=out, metrics=_metrics(), config=cfg.to_dict(), config_diff={"lr": (3e-4, 1e-3)},
        best={"trial_id": "t1", "best_val_acc": 0.61, "best_epoch": 3, "epochs": 4, "status": "completed"},
        seed_runs=[{"seed": s, "best_val_acc": 0.6 + s / 100, "best_epoch": 3, "epochs": 4, "accuracy": 0.61,
                    "kept": s == 1} for s in (0, 1)],
        commands={"Search:": "fersearch tune --trials 3", "Retrain:": "fersearch best page --evaluate"},
        provenance={"data_path": "x.csv", "data_sha256": "abcdef0123456789", "versions": {"torch": "2.13"}},
        analysis=_analysis(), tta_metrics=_metrics(shift=0.01), images=images,
        notes=["The data file changed since the search."],
        pareto=pd.DataFrame({"trial": ["t1", "t0"], "best val_acc": [0.61, 0.55], "latency ms": [1.2, 0.8]}),
        pareto_rule="best val_acc", tie_break=_tie_break())


def _headings_html(page: str) -> list[str]:
    return [html.unescape(t) for t in re.findall(r"<h[23]>(.*?)</h[23]>", page)]


def _headings_md(md: str) -> list[str]:
    return re.findall(r"^#{2,3} (.*)$", md, re.M)


def _sentences(blocks) -> list[str]:
    """Every sentence of the page model: paragraphs, points, commands and their labels."""
    out = []
    for b in blocks:
        if isinstance(b, Section):
            out += _sentences(b.blocks)
        elif isinstance(b, Para):
            out.append(b.text)
        elif isinstance(b, Points):
            out += b.items
        elif isinstance(b, Command):
            out += [b.label, b.text]
    return out


def _loose(text: str) -> str:
    """Text without markup and with runs of spaces as one, to compare the two renderings' words."""
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>|\*\*|`", "", text)))


def test_both_renderings_carry_the_same_sections_and_notes(tmp_path):
    ctx = full_context(tmp_path / "out")
    page = build_page(ctx)
    page_html, md = render_html(page), render_markdown(page)
    titles = [s.title for s in page.sections()]
    assert titles == _headings_html(page_html) == _headings_md(md)
    for title in ("Ties with the best", "Per-class metrics", "Training of the retrained model", "Winning configuration",
                  "Reproduce", "Search analysis", "What the search saw", "Top trials", "Hyperparameter importance",
                  "Accuracy against latency (Pareto front)", "Provenance"):
        assert title in titles
    sentences = _sentences(page.blocks)
    assert len(sentences) >= 20
    for s in sentences:  # every sentence of the page, in both renderings
        assert s in _loose(page_html) and s in _loose(md), s
    # the notes report.md used to lack: flip TTA, the seed runs, values that differ from the seed
    for note in ("Horizontal-flip test-time augmentation", "Retrained with several seeds",
                 "Values that differ from the seed CNN", "The hyperparameters that differ between them"):
        assert note in page_html and note in md
    assert "<p class=warn>The data file changed since the search.</p>" in page_html
    assert "> The data file changed since the search." in md
    # the same figures; the HTML embeds them, Markdown links them
    assert len(re.findall(r'<img[^>]*src="data:image/png;base64,', page_html)) == len(IMAGES)
    assert sorted(re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)) == sorted(ctx.images.values())
    # the same numbers
    for text in (page_html, md):
        assert "0.6123" in text and "0.6223" in text and "61.23%" in text and "2 seeds" in text
        assert "Never predicted correctly: Disgust (3 test images)." in text
        assert "1 hyperparameter the same in all 3 top trials" in text
        assert "fersearch best page --evaluate" in text and "abcdef012345" in text


def test_a_report_without_a_search_analysis_leaves_its_sections_out_of_both(tmp_path):
    ctx = full_context(tmp_path / "out")
    ctx.analysis, ctx.tta_metrics, ctx.pareto, ctx.tie_break, ctx.notes = None, None, None, None, []
    ctx.seed_runs = ctx.seed_runs[:1]
    html_path, md_path = write_pages(ctx)
    page_html, md = html_path.read_text(), md_path.read_text()
    expected = ["Per-class metrics", "Training of the retrained model", "Winning configuration", "Reproduce",
                "Provenance"]
    assert _headings_html(page_html) == _headings_md(md) == expected
    for text in (page_html, md):
        assert "test-time augmentation" not in text and "several seeds" not in text
    assert "<p class=warn>" not in page_html and "\n> " not in md


@pytest.mark.parametrize("text", ["a <b>bold</b> & 'quoted' name", "**stars** and `ticks`"])
def test_text_from_a_results_folder_is_escaped_in_html(tmp_path, text):
    ctx = full_context(tmp_path / "out")
    ctx.notes = [text]
    page = render_html(build_page(ctx))
    assert html.escape(text) in page and "<b>bold</b> &" not in page
