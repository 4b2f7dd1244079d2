"""What a finished (or still running) search says: pandas over trials.csv and history.csv,
Optuna over the search's own study (results/<name>/study.journal).

Every trial is judged by its best validation accuracy over its epochs (the tuning
playbook's rule; Ray's `get_best_result` defaults to the last epoch instead). The
analysis feeds `fersearch best` and the report page: the ranking, hyperparameters
whose best value sits on the boundary of the space, Optuna's importance estimates,
the share of failed or diverged trials, and the seed configuration's own result.

The space's declared ranges and the importance estimates come from the Optuna study the
search saved, never from the space's source: nothing recorded in a results folder is run.
A search without a study (made before studies were saved) gets the boundary check on the
range of values tried and no importance estimates.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ..config import TrainConfig
from ..fmt import first_line, missing, plain
from ..results.decisions import Decision
from ..results.experiment import (
    PARAM_PREFIX,
    SOURCE_COLUMN,
    TrialStatus,
    best_trial,
    param_columns,
    trial_config,
)
from ..results.record import ExperimentRecord
from ..results.rungs import search_rungs
from .boundaries import Boundary, declared_ranges, find_boundaries, is_bool, trial_distributions
from .diagnose import Diagnosis, diagnose
from .ties import Ties, find_ties

if TYPE_CHECKING:
    import optuna
    from optuna.distributions import BaseDistribution
    from optuna.importance import BaseImportanceEvaluator

__all__ = ["Boundary", "SearchAnalysis", "analyze", "is_bool", "rank_trials", "top_table", "trial_params"]

METRIC = "best_val_acc"
# Fields that say how a run is executed, not which model/training it is: a trial with the
# seed's model and training hyperparameters is "the seed configuration" whatever these are.
RUN_FIELDS = ("epochs", "seed", "precision", "patience")
MIN_IMPORTANCE_TRIALS = 3
NO_STUDY_NOTE = ("No hyperparameter importance: this search saved no Optuna study (study.journal; searches "
                 "made before fersearch saved one have none). A new search records it.")


@dataclass
class SearchAnalysis:
    trials: pd.DataFrame  # trials.csv with `best_val_acc` filled from history where missing, ranked
    history: pd.DataFrame
    params: list[str]  # search-space parameter names (without the config/ prefix)
    best_trial: str | None
    counts: dict[str, int]
    failed_share: float
    diverged: list[str]  # status diverged: a non-finite training loss ended the trial (the trainer's rule)
    boundaries: list[Boundary]
    boundary_basis: str  # "declared" when the space's ranges were known, else "tried"
    importance: dict[str, dict[str, float]]  # evaluator name -> {param: importance}
    importance_note: str
    seed_trial: str | None  # trial id whose config is the seed configuration, if any
    rungs: list[int]  # ASHA's rung epochs (rungs.search_rungs) when the scheduler was ASHA
    # {param: the span of every range the space declared for it} (from the study): the scatter plot's axes
    distributions: dict[str, BaseDistribution] = field(default_factory=dict)
    study: optuna.Study | None = None  # the search's study, None for a search that saved none
    decisions: list[Decision] = field(default_factory=list)  # the scheduler's log (scheduler.jsonl)
    diagnoses: list[Diagnosis] = field(default_factory=list)  # what to change, flag named
    loss_rose: list[str] = field(default_factory=list)  # trials whose training loss ended above where it started
    ties: Ties | None = None  # the trials within noise of the best, paired on the validation images (ties.py)

    def top(self, n: int = 5) -> pd.DataFrame:
        return top_table(self.trials, self.params, n)


# ---------------------------------------------------------------- ranking
def rank_trials(trials: pd.DataFrame, history: pd.DataFrame) -> pd.DataFrame:
    """Trials sorted by best val_acc (descending); a trial that reported epochs to history.csv
    but whose row has no best yet (still running) gets it from its history."""
    df = trials.copy()
    for col in (METRIC, "best_epoch", "epochs"):
        df[col] = pd.to_numeric(df[col], errors="coerce")
    if len(history):
        per = history.groupby("trial_id")["val_acc"]
        measured = history[history["val_acc"].notna()]  # a diverged trial's last epoch has no val_acc
        best_epoch = history.loc[measured.groupby("trial_id")["val_acc"].idxmax()].set_index("trial_id")["epoch"]
        ids = df["trial_id"]
        df[METRIC] = df[METRIC].fillna(ids.map(per.max()).astype(float))
        df["best_epoch"] = df["best_epoch"].fillna(ids.map(best_epoch).astype(float))
        df["epochs"] = df["epochs"].where(df["epochs"] > 0, ids.map(per.count()).astype(float))
    df[METRIC] = pd.to_numeric(df[METRIC], errors="coerce")
    df = df.sort_values(METRIC, ascending=False, na_position="last", kind="stable")
    df = df.sort_values("status", key=lambda s: s == TrialStatus.DIVERGED, kind="stable")  # never the best
    return df.reset_index(drop=True)


def trial_params(row: pd.Series) -> dict[str, object]:
    """The search-space parameters of one trials.csv row ({name: value}, absent ones left out)."""
    return {c[len(PARAM_PREFIX):]: plain(row[c]) for c in row.index
            if str(c).startswith(PARAM_PREFIX) and not missing(row[c])}


def top_table(ranked: pd.DataFrame, params: list[str], n: int = 5) -> pd.DataFrame:
    cols = ["trial_id", "status", "epochs", METRIC, "best_epoch", SOURCE_COLUMN, *[PARAM_PREFIX + p for p in params]]
    out = ranked[ranked[METRIC].notna()].head(n)[[c for c in cols if c in ranked.columns]].copy()
    for c in out.columns.drop(METRIC):
        # Counts and integer parameters turn float in a column with gaps (filters_4 of 3-block trials).
        if out[c].dtype.kind == "f" and out[c].notna().any() and (out[c].dropna() % 1 == 0).all():
            out[c] = out[c].astype("Int64")
    return out.rename(columns=lambda c: c[len(PARAM_PREFIX):] if c.startswith(PARAM_PREFIX) else c)


def proposal_sources(trials: pd.DataFrame) -> dict[str, int]:
    """How many trials each proposal source gave (trials.csv's source column: --sampler mix), most first;
    {} for searches whose sampler did not say."""
    if SOURCE_COLUMN not in trials.columns or not trials[SOURCE_COLUMN].notna().any():
        return {}
    return {str(k): int(v) for k, v in trials[SOURCE_COLUMN].fillna("unknown").value_counts().items()}


def proposal_source(trials: pd.DataFrame, trial_id: str) -> str:
    """Where a trial's configuration came from (recipe, prior, incumbent, tpe, random), or "" if not said."""
    if SOURCE_COLUMN not in trials.columns:
        return ""
    found = trials.loc[trials["trial_id"] == trial_id, SOURCE_COLUMN].dropna()
    return str(found.iloc[0]) if len(found) else ""


# ---------------------------------------------------------------- analysis
def analyze(trials: pd.DataFrame, history: pd.DataFrame, record: ExperimentRecord, study: optuna.Study | None = None,
            importance: bool = True, decisions: list[Decision] | None = None,
            per_image: Mapping[str, Mapping[int, Mapping[str, object]]] | None = None) -> SearchAnalysis:
    """Everything the report says about the search. `study`: the search's optuna.Study (its
    declared distributions and trial values), None when the search saved none.
    `importance=False` skips Optuna's importance estimates (the slow part), e.g. for a quick
    `fersearch best`. `decisions`: the scheduler's log (decisions.read_decisions), for the diagnoses.
    `per_image`: the trials' per-image validation records (experiment.read_per_image), for the ties."""
    ranked = rank_trials(trials, history)
    params = [c[len(PARAM_PREFIX):] for c in param_columns(ranked)]
    best = best_trial(ranked)  # the ranking's first scored row, by the search's one rule
    best_id = str(best["trial_id"]) if best else None
    counts = {s: int((ranked["status"] == s).sum()) for s in ranked["status"].unique()}
    dists = declared_ranges(study)
    scored = ranked[ranked[METRIC].notna() & (ranked["status"] != TrialStatus.DIVERGED)]
    own = trial_distributions(study, trial_params(scored.iloc[0])) if best_id else {}
    boundaries = find_boundaries(scored, params, own) if best_id else []
    estimates, note = param_importance(study) if importance else ({}, "importance not computed")
    seed_trial = find_seed_trial(ranked)
    decisions = list(decisions or [])
    ties = find_ties(ranked, per_image or {}, record.noise.z)
    return SearchAnalysis(
        trials=ranked, history=history, params=params, best_trial=best_id, counts=counts,
        failed_share=counts.get("failed", 0) / len(ranked) if len(ranked) else 0.0,
        diverged=[str(t) for t in ranked.loc[ranked["status"] == TrialStatus.DIVERGED, "trial_id"]],
        boundaries=boundaries, boundary_basis="declared" if own else "tried", importance=estimates,
        importance_note=note,
        seed_trial=seed_trial, rungs=search_rungs(record), distributions=dists, study=study, decisions=decisions,
        diagnoses=diagnose(ranked, history, record, decisions, boundaries, seed_trial, ties),
        loss_rose=loss_rose(history), ties=ties,
    )


def loss_rose(history: pd.DataFrame) -> list[str]:
    """Trials whose (finite) training loss ended above where it started: a sign of too large a step,
    not a divergence (that is status diverged: a non-finite loss, which ends the trial)."""
    out = []
    for tid, h in history.sort_values("epoch").groupby("trial_id", sort=False):
        tl = h["train_loss"].to_numpy(dtype=float)
        tl = tl[np.isfinite(tl)]
        if len(tl) > 1 and tl[-1] > tl[0]:
            out.append(str(tid))
    return out


NEGLIGIBLE_WEIGHT_DECAY = 1e-6


def find_seed_trial(trials: pd.DataFrame) -> str | None:
    """The trial that trained the seed configuration (TrainConfig() up to RUN_FIELDS), if any."""
    seed = _model_fields(TrainConfig())
    for _, row in trials.iterrows():
        try:
            if _model_fields(trial_config(row)) == seed:
                return str(row["trial_id"])
        except Exception:  # noqa: BLE001 - a damaged row is simply not the seed
            continue
    return None


def _model_fields(cfg: TrainConfig) -> dict[str, Any]:
    fields = {k: v for k, v in cfg.to_dict().items() if k not in RUN_FIELDS}
    # A log-scale weight-decay range cannot hold 0; its floor (the wide space's warm-start seed point
    # uses 1e-6) changes nothing measurable, so it counts as the seed's none.
    if fields.get("weight_decay", 0) <= NEGLIGIBLE_WEIGHT_DECAY:
        fields["weight_decay"] = 0.0
    return fields


def config_diff(cfg: TrainConfig, base: TrainConfig | None = None) -> dict[str, tuple[object, object]]:
    """{field: (base value, cfg value)} for model/training fields that differ from `base` (the seed)."""
    a, b = _model_fields(base or TrainConfig()), _model_fields(cfg)
    return {k: (a[k], b[k]) for k in a if a[k] != b[k]}


# ---------------------------------------------------------------- importance
def param_importance(study: optuna.Study | None) -> tuple[dict[str, dict[str, float]], str]:
    """Optuna's importance evaluators (PED-ANOVA, its default, and fANOVA) over the study's
    finished trials, with the distributions the space declared. ({}, why) when there is no
    study or too little in it."""
    if study is None:
        return {}, NO_STUDY_NOTE
    import optuna
    from optuna.trial import TrialState

    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
            if t.values is not None]
    # Optuna's evaluators read COMPLETE trials only, and ASHA's stops are PRUNED (workarounds): a view with both.
    from ..results.study import quiet_optuna

    with quiet_optuna():  # no "A new study created in memory" line
        view = optuna.create_study(directions=study.directions)
    view.add_trials([optuna.trial.create_trial(params=t.params, distributions=t.distributions, values=t.values)
                     for t in done])
    study = view
    names = list(dict.fromkeys(p for t in done for p in t.params))
    varying = [p for p in names if len({repr(t.params[p]) for t in done if p in t.params}) > 1]
    if len(done) < MIN_IMPORTANCE_TRIALS or not varying:
        return {}, (f"not enough finished trials ({len(done)}) with varying hyperparameters "
                    f"to estimate importance (needs {MIN_IMPORTANCE_TRIALS} or more)")
    everywhere = [p for p in varying if all(p in t.params for t in done)]  # fANOVA skips conditional ones
    evaluators: dict[str, tuple[Callable[[], BaseImportanceEvaluator], list[str]]] = {
        # by name, not Optuna's default (PED-ANOVA in Optuna 5, fANOVA in 4): the label says what ran
        "PED-ANOVA": (lambda: optuna.importance.PedAnovaImportanceEvaluator(), varying),
        "fANOVA": (lambda: optuna.importance.FanovaImportanceEvaluator(seed=0), everywhere),
    }
    out: dict[str, dict[str, float]] = {}
    problems = []
    for name, (make, params) in evaluators.items():
        if not params:
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                # A val_acc,latency study has two values per trial: importance is for val_acc.
                target = (lambda t: t.values[0]) if len(study.directions) > 1 else None
                imp = optuna.importance.get_param_importances(study, evaluator=make(), params=params, target=target)
            out[name] = {k: float(v) for k, v in imp.items()}
        except (ValueError, RuntimeError) as e:
            problems.append(f"{name} failed: {first_line(e)}")
    note = (f"Optuna importance over {len(done)} finished trials (completed or stopped by ASHA, each valued "
            "by its best val_acc), from the search's own Optuna study with the distributions its space declared.")
    if len(done) < 20:
        note += (" With fewer than 20 trials these estimates are rough (where the two evaluators disagree, "
                 "trust neither); a longer search sharpens them.")
    return out, " ".join([note, *problems])
