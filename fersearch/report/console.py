"""What `fersearch best`, `best --evaluate` and `predict` print: plain text for a terminal.

Numbers go through fersearch.fmt (accuracies and losses with 4 decimals), so the terminal
shows the same figures as metrics.json and the report pages.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import pandas as pd

from ..fmt import acc, cells, num
from .analysis import config_diff, proposal_source, proposal_sources
from .tiebreak import tie_break_lines, tie_lines

if TYPE_CHECKING:
    from .best import BestTrial
    from .diagnose import Diagnosis


def format_table(df: pd.DataFrame) -> str:
    return cells(df).to_string(index=False)


def format_best(bt: BestTrial, n: int = 5) -> str:
    """What `fersearch best` prints: the winner, how it was judged, its config, the top trials."""
    a = bt.analysis
    counts = ", ".join(f"{c} {s}" for s, c in sorted(a.counts.items(), key=lambda kv: -kv[1]))
    planned = bt.record.planned_trials
    started = f"{len(a.trials)} of {planned}" if planned and planned > len(a.trials) else f"{len(a.trials)}"
    state = ("search still running or interrupted: using what has reported so far" if bt.unfinished
             else "search finished")
    lines = [f"experiment {bt.name} ({bt.experiment}): {started} trials ({counts}); {state}",
             f"best trial {bt.trial_id} ({bt.status}): val_acc {acc(bt.best_val_acc)} at epoch {bt.best_epoch} "
             f"of {bt.epochs}" + (f"; proposed as {source}" if (source := proposal_source(a.trials, bt.trial_id))
                                  else ""),
             "  judged by each trial's best val_acc over its epochs (Ray's default scope is the last epoch)"]
    sources = proposal_sources(a.trials)
    if sources:
        lines.append("  proposals: " + ", ".join(f"{n} {s}" for s, n in sources.items()))
    if bt.params:
        lines.append("search-space parameters: " + ", ".join(f"{k}={num(v, 4)}" for k, v in bt.params.items()))
    changes = ", ".join(f"{k} {num(old, 4)} -> {num(new, 4)}" for k, (old, new) in config_diff(bt.config).items())
    lines.append("differs from the seed CNN: " + (changes or "nothing (it is the seed configuration)"))
    lines += ["", f"top {min(n, len(a.trials))} trials by best val_acc:", format_table(bt.top(n))]
    lines += ["", *tie_lines(a.ties)]
    lines += diagnosis_lines(a.diagnoses)
    return "\n".join(lines)


def closing_lines(bt: BestTrial) -> list[str]:
    """What `fersearch tune` prints after its summary: the ties with the best, then the diagnoses."""
    return ["", *tie_lines(bt.analysis.ties), *diagnosis_lines(bt.analysis.diagnoses)]


def diagnosis_lines(diagnoses: Sequence[Diagnosis]) -> list[str]:
    """The search's diagnoses (report.diagnose), one bullet each, after a blank line and a title."""
    return ["", "what the search saw:", *(f"  - {d.message}" for d in diagnoses)] if diagnoses else []


def _figures(m: dict[str, Any]) -> str:
    return (f"accuracy {acc(m['accuracy'])}, loss {acc(m['loss'])}, macro F1 {acc(m['macro_f1'])}, "
            f"weighted F1 {acc(m['weighted_f1'])}")


def format_evaluation(ev: Any) -> str:  # a bestdir.Evaluation (bestdir imports this module's callers)
    """What `fersearch best --evaluate` prints after training: figures, report, files."""
    m, t = ev.metrics, ev.tta_metrics
    lines = [f"{m['split']} split, n={m['n']}: {_figures(m)}"]
    if t:
        lines.append(f"with horizontal-flip TTA: {_figures(t)}")
    s = m["seeds"]
    if s["n"] > 1:
        lines.append(f"{s['n']} seeds {s['seeds']}: {m['split']} accuracy {acc(s['accuracy']['mean'])} ± "
                     f"{acc(s['accuracy']['std'])}, val_acc {acc(s['val_acc']['mean'])} ± {acc(s['val_acc']['std'])} "
                     f"(mean ± sample std); kept seed {s['kept_seed']} (best val_acc)")
    lines += tie_break_lines(m.get("tie_break"))
    lines += ["", ev.report.rstrip(), "", f"wrote {ev.out_dir}/:"]
    lines += [f"  {p.name}" for p in ev.files.values()]
    lines.append(f"open {ev.out_dir / 'report.html'} in a browser for the full report")
    return "\n".join(lines)


def format_predictions(preds: Sequence[Any]) -> str:
    """What `fersearch predict` prints: one row per face (image, face, box x,y,w,h), confidence and
    probabilities (3 decimals); images with no face found are left to the caller's line."""
    rows = [{"image": p.image, "face": p.face, "box": ",".join(map(str, p.box)) if p.box else "-",
             "emotion": p.emotion, "confidence": p.confidence, **p.probabilities} for p in preds if p.emotion]
    if not rows:
        return ""
    return pd.DataFrame(rows).to_string(index=False, float_format=lambda v: f"{v:.3f}")
