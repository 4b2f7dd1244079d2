"""The search's Optuna study, kept in the experiment folder through Optuna's own storage.

Ray's OptunaSearch writes its study to `results/<name>/study.journal` (an Optuna
JournalStorage file), named after the experiment. Anything Optuna offers can then
open a search, while it runs or after, without fersearch:

    optuna-dashboard results/<name>/study.journal
    optuna.load_study(study_name="<name>", storage=JournalStorage(JournalFileBackend("results/<name>/study.journal")))

Each study trial's value is the trial's best val_acc so far (trials report a running
`best_val_acc`, SEARCH_METRIC, also each epoch's intermediate value): a trial ASHA stops
is PRUNED with its best, not its last epoch, as value, and equals trials.csv's
best_val_acc; a trial that failed or diverged is FAIL (no value). Its params carry the space's
declared distributions (what importance analysis and the plots need).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..io import cut_torn_tail
from ..results.study import STUDY_FILE, load_study, storage, study_name
from .workarounds import TPE_SETTINGS, optuna_search_with_states, remove_journal_lock

if TYPE_CHECKING:
    from .spaces import Space

SEARCH_METRIC, MODE = "best_val_acc", "max"
LATENCY_METRIC = "latency_ms"  # the second objective of --objectives val_acc,latency (minimised)


def close_study(exp_dir: str | os.PathLike) -> int:
    """After a search has run every trial: fail the study trials still RUNNING, which no one
    will ever tell (asked just before a crash, after Ray's last snapshot, so the resumed
    searcher never knew them). Returns how many. Nothing to do without a study.journal."""
    import optuna

    study = load_study(exp_dir)
    if study is None:
        return 0
    lost = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    for t in lost:
        study.tell(t.number, state=optuna.trial.TrialState.FAIL)
    return len(lost)


def startup_trials(trials: int) -> int:
    """TPE's random start-up trials for a search of `trials`: a third, 2 to 10.

    TPE's default of 10 would make a short search purely random."""
    return min(10, max(2, trials // 3))


def make_sampler(sampler: str, seed: int, trials: int, space_fn: Any = None, **tpe: Any) -> Any:
    """The search's Optuna sampler: "random", "tpe" (Optuna 5's TPE: multivariate, constant
    liar) with startup_trials(trials) start-up trials, or "mix" (sampler.MixSampler: proposals near
    the incumbent and the recipes, that TPE for the rest; needs the space's `space_fn`); `tpe`
    overrides TPESampler's arguments."""
    import optuna

    if sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    tpe_sampler = optuna.samplers.TPESampler(**{"seed": seed, "n_startup_trials": startup_trials(trials),
                                                **TPE_SETTINGS, **tpe})
    if sampler == "mix":
        from .sampler import MixSampler

        return MixSampler(space_fn, seed=seed, trials=trials, tpe=tpe_sampler)
    return tpe_sampler


def searcher(space: Space, *, sampler: str, seed: int, trials: int, exp_dir: Path, name: str,
             objectives: Sequence[str] = ("val_acc",), max_epochs: int | None = None) -> Any:
    """Ray's OptunaSearch over `space` (telling stopped trials PRUNED, failed and diverged ones FAIL:
    workarounds.optuna_search_with_states), seeded, keeping its study in <exp_dir>/study.journal.
    objectives val_acc,latency: a two-objective study (best_val_acc max, latency_ms min), so
    the journal (and optuna-dashboard) holds the Pareto front."""
    metric: Any = SEARCH_METRIC
    mode: Any = MODE
    if "latency" in objectives:
        metric, mode = [SEARCH_METRIC, LATENCY_METRIC], [MODE, "min"]
    # Only the warm-start points the search will run: Ray enqueues every point at once, and the rest
    # would stay WAITING in the study for ever.
    search = __getattr__("OptunaSearchWithStates")(
        space=space.fn, metric=metric, mode=mode, sampler=make_sampler(sampler, seed, trials, space.fn),
        points_to_evaluate=[dict(p) for p in space.points[:trials]] or None,
        storage=storage(exp_dir), study_name=study_name(name))
    search.max_epochs = max_epochs  # ASHA's stops (done before max_epochs) are told PRUNED
    return search


def reopen_study_journal(exp_dir: Path) -> None:
    """Before a resumed search appends to study.journal again: cut a torn last line (a full disk
    mid-append; Optuna would append after it and then fail to read the study), and remove the
    journal lock of a search killed while it held it (Optuna would wait 30 s for it). Safe because
    this search holds the experiment's own lock: no other search writes the journal."""
    cut_torn_tail(exp_dir / STUDY_FILE)
    remove_journal_lock(exp_dir / STUDY_FILE)


def __getattr__(name: str) -> Any:
    # Built on first use (no Ray import for `fersearch status`); Ray's tuner.pkl finds it here on --resume.
    if name == "OptunaSearchWithStates":
        cls = globals().get(name) or optuna_search_with_states(__name__)
        globals()[name] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
