"""The search's default sampler: proposals near the best trial so far, the recipes' neighbourhood
early on, and TPE for the rest (`--sampler mix`).

Why: at 16-50 trials in a space of ~20 dimensions, TPE gets a handful of guided proposals
after its random start-up, and they land far from the good region (the winners of
earlier searches were single-step neighbours of the `std` recipe). PriorBand (Mallik et al.,
NeurIPS 2023; neps/optimizers/priorband.py) mixes draws from an expert prior, mutations of the
incumbent and random draws, with weights that move from the prior to the incumbent as rungs fill.
This is that mix, written as an Optuna sampler so the study, optuna-dashboard and --resume
work as with TPE:

  recipe     the space's warm-start points (enqueued by Ray's OptunaSearch: Optuna's fixed params)
  prior      a recipe (the better it scored, the likelier) with every number moved a little on
             its own scale and each categorical kept with probability 0.9
  incumbent  the best trial so far (finished trials by their value, running ones by their best
             intermediate value) with 1-3 parameters moved a step on their own scale: log scale
             for log ranges, whole steps for ints and step grids, the neighbouring choice for
             ordered choices (filters, batch size), other categoricals flipped (chosen 0.3x as
             often as a number)
  tpe        the wrapped TPESampler (multivariate, constant liar), or `random` while TPE is
             still in its random start-up, and for --sampler-free fallbacks

Shares after the recipes, p = finished trials / planned trials: prior 0.35 (1 - p), incumbent
0.40 + 0.30 p, TPE the rest (0.25 -> 0.30). Multi-objective studies get TPE alone.

Every proposal is made whole before the trial's first suggest: the space function (define-by-run)
runs against a dry trial that answers each suggest by the chosen rule, so conditional parameters
appear as the space makes them, and the whole configuration is checked against every trial of the
study, running and waiting ones included (the constant liar's view of them): a duplicate is drawn
again (8 tries, then random). The real trial then receives the planned values from
sample_independent. A running trial counts as an incumbent by its intermediate values, and its
running mutations (user attr `parent`) count as its proposals: one that already has
MAX_PENDING_CHILDREN of them running hands the next mutation to the next-best trial.
Each trial's user attrs: `source` (recipe, prior, incumbent, tpe, random) and `parent` (the
trial number a prior or incumbent proposal moved from).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TypeAlias

import numpy as np
import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalChoiceType,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.samplers import BaseSampler, RandomSampler, TPESampler
from optuna.study import Study, StudyDirection
from optuna.trial import FrozenTrial, TrialState

SOURCE_ATTR, PARENT_ATTR = "source", "parent"
SOURCES = ("recipe", "prior", "incumbent", "tpe", "random")
PRIOR_SIGMA, PRIOR_KEEP = 0.08, 0.9  # prior: every number moved by N(0, 0.08) of its (log) range
STEP_SIGMA = 0.2  # incumbent: a moved number goes N(0, 0.2) of its (log) range, at least one step
MUTATIONS = ((1, 0.4), (2, 0.35), (3, 0.25))  # how many parameters an incumbent proposal moves
CATEGORICAL_WEIGHT = 0.3  # categorical flips are rarer than numeric steps
MAX_PENDING_CHILDREN = 2
DEDUP_TRIES = 8
_PENDING = (TrialState.RUNNING, TrialState.WAITING)
Param: TypeAlias = CategoricalChoiceType  # a parameter value as Optuna stores it: None, bool, int, float or str
Pick = Callable[[str, BaseDistribution], Param]  # (parameter name, its distribution) -> the value proposed


def shares(progress: float) -> dict[str, float]:
    """The proposal mix after the recipes, at `progress` (finished / planned trials, 0..1)."""
    p = min(1.0, max(0.0, progress))
    prior, incumbent = 0.35 * (1 - p), 0.40 + 0.30 * p
    return {"prior": prior, "incumbent": incumbent, "tpe": 1.0 - prior - incumbent}


class MixSampler(BaseSampler):
    """Recipes, then prior / incumbent / TPE proposals (see the module docstring); seeded."""

    def __init__(self, space: Callable[[_DryTrial], object], *, seed: int, trials: int, tpe: TPESampler | None = None):
        self._space = space  # the define-by-run space (pickles: SpaceFunction or PickledFunction)
        self._seed = seed
        self._trials = max(1, trials)
        self._tpe = tpe or TPESampler(seed=seed)
        self._random = RandomSampler(seed=seed)
        self._plans: dict[int, dict[str, Param]] = {}  # trial number -> its planned params

    # ---- Optuna's sampler interface
    def reseed_rng(self) -> None:
        self._tpe.reseed_rng()
        self._random.reseed_rng()

    def infer_relative_search_space(self, study: Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return {}  # every proposal is planned whole in before_trial

    def sample_relative(self, study: Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Param]:
        return {}

    def sample_independent(self, study: Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Param:
        plan = self._plans.get(trial.number, {})
        if param_name in plan and _contains(param_distribution, plan[param_name]):
            return plan[param_name]
        # not planned: a recipe's parameter the point leaves out, or a space that is not deterministic
        return self._random.sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        self._tpe.before_trial(study, trial)
        if "fixed_params" in trial.system_attrs:
            _set_user_attr(study, trial, SOURCE_ATTR, "recipe")
            return
        rng = np.random.default_rng([self._seed, trial.number])
        source, parent, params = self._propose(study, trial, rng)
        self._plans[trial.number] = params
        _set_user_attr(study, trial, SOURCE_ATTR, source)
        if parent is not None:
            _set_user_attr(study, trial, PARENT_ATTR, parent)

    def after_trial(self, study: Study, trial: FrozenTrial, state: TrialState,
                    values: Sequence[float] | None) -> None:
        self._plans.pop(trial.number, None)
        self._tpe.after_trial(study, trial, state, values)

    # ---- proposing
    def _propose(self, study: Study, trial: FrozenTrial,
                 rng: np.random.Generator) -> tuple[str, int | None, dict[str, Param]]:
        trials = study.get_trials(deepcopy=False)
        seen = {_key(_params(t)) for t in trials if t.number != trial.number}
        seen.update(_key(p) for n, p in self._plans.items() if n != trial.number)
        source = self._choose(study, trials, rng)
        for attempt in range(2 * DEDUP_TRIES):
            if attempt == DEDUP_TRIES:
                source = "random"  # the neighbourhood is used up: anywhere new
            parent, pick = self._picker(source, study, trial, trials, rng)
            params = self._dry_run(pick)
            if _key(params) not in seen:
                return self._label(source, study), parent, params
        return "random", None, params  # a space too small to avoid a repeat: say so in the source

    def _choose(self, study: Study, trials: list[FrozenTrial], rng: np.random.Generator) -> str:
        if len(study.directions) > 1 or not _scored(study, trials):
            return "tpe" if len(study.directions) > 1 or not _recipes(trials) else "prior"
        finished = sum(t.state.is_finished() for t in trials)
        mix = shares(finished / self._trials)
        if not _recipes(trials):
            mix = {"incumbent": mix["incumbent"], "tpe": mix["tpe"] + mix["prior"]}
        names = list(mix)
        return str(names[int(rng.choice(len(names), p=np.array(list(mix.values())) / sum(mix.values())))])

    def _label(self, source: str, study: Study) -> str:
        """TPE proposes at random until it has n_startup_trials finished trials: say random then."""
        if source == "tpe":
            done = study._get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
            return "tpe" if len(done) >= self._tpe._n_startup_trials else "random"
        return source

    def _picker(self, source: str, study: Study, trial: FrozenTrial, trials: list[FrozenTrial],
                rng: np.random.Generator) -> tuple[int | None, Pick]:
        """(parent trial number, a function answering each suggest) for one proposal of `source`."""
        def random(name: str, dist: BaseDistribution) -> Param:
            return self._random.sample_independent(study, trial, name, dist)

        if source == "tpe":
            space = self._tpe.infer_relative_search_space(study, trial)
            relative = self._tpe.sample_relative(study, trial, space)

            def tpe(name: str, dist: BaseDistribution) -> Param:
                if name in relative and space.get(name) == dist and _contains(dist, relative[name]):
                    return relative[name]
                return self._tpe.sample_independent(study, trial, name, dist)
            return None, tpe
        if source == "prior":
            parent = _pick_recipe(study, trials, rng)
            base = _params(parent)

            def prior(name: str, dist: BaseDistribution) -> Param:
                if name not in base:
                    return random(name, dist)
                if isinstance(dist, CategoricalDistribution) and not _ordered(dist):
                    keep = rng.random() < PRIOR_KEEP
                    return _fit(base[name], dist, rng) if keep else mutate(base[name], dist, rng, 1.0)
                return mutate(base[name], dist, rng, PRIOR_SIGMA, force=False)
            return parent.number, prior
        if source == "incumbent":
            parent = _incumbent(study, trials)
            base = _params(parent)
            moved = _choose_moves(base, rng)

            def incumbent(name: str, dist: BaseDistribution) -> Param:
                if name not in base:
                    return random(name, dist)
                return mutate(base[name], dist, rng, STEP_SIGMA) if name in moved else _fit(base[name], dist, rng)
            return parent.number, incumbent
        return None, random

    def _dry_run(self, pick: Pick) -> dict[str, Param]:
        dry = _DryTrial(pick)
        self._space(dry)
        return dry.params


def _set_user_attr(study: Study, trial: FrozenTrial, key: str, value: object) -> None:
    """In the storage and in the frozen trial Optuna's Trial caches (its user_attrs read that copy)."""
    study._storage.set_trial_user_attr(trial._trial_id, key, value)
    trial.user_attrs[key] = value


# ---- the incumbent and the recipes
def _params(t: FrozenTrial) -> dict[str, Param]:
    return dict(t.params) or dict(t.system_attrs.get("fixed_params") or {})


def _recipes(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    return [t for t in trials if "fixed_params" in t.system_attrs]


def _score(study: Study, t: FrozenTrial) -> float | None:
    """A trial's best value so far, larger is better: a finished trial's value, a running one's
    best intermediate value; None for failed or diverged trials and those without a value yet."""
    if t.state == TrialState.FAIL or t.user_attrs.get("status") == "diverged":
        return None
    sign = 1.0 if study.direction == StudyDirection.MAXIMIZE else -1.0
    if t.state in (TrialState.COMPLETE, TrialState.PRUNED) and t.value is not None:
        return sign * t.value
    if t.state == TrialState.RUNNING and t.intermediate_values:
        return max(sign * v for v in t.intermediate_values.values() if not math.isnan(v))
    return None


def _scored(study: Study, trials: list[FrozenTrial]) -> list[tuple[float, int, FrozenTrial]]:
    """(score, epochs, trial), best first; more epochs win a tie (a longer-trained equal)."""
    out = [(s, len(t.intermediate_values), t) for t in trials if (s := _score(study, t)) is not None]
    return sorted(out, key=lambda x: (-x[0], -x[1], x[2].number))


def _incumbent(study: Study, trials: list[FrozenTrial]) -> FrozenTrial:
    """The best trial, unless MAX_PENDING_CHILDREN of its mutations are running already: then the next."""
    ranked = [t for _, _, t in _scored(study, trials)]
    pending: dict[int, int] = {}
    for t in trials:
        if t.state in _PENDING and t.user_attrs.get(SOURCE_ATTR) == "incumbent":
            pending[t.user_attrs.get(PARENT_ATTR, -1)] = pending.get(t.user_attrs.get(PARENT_ATTR, -1), 0) + 1
    return next((t for t in ranked if pending.get(t.number, 0) < MAX_PENDING_CHILDREN), ranked[0])


def _pick_recipe(study: Study, trials: list[FrozenTrial], rng: np.random.Generator) -> FrozenTrial:
    """A recipe, weighted by rank (best scored first, unscored after): weights 1, 1/2, 1/3, ..."""
    recipes = _recipes(trials)
    scores = {t.number: _score(study, t) for t in recipes}
    recipes.sort(key=lambda t: (scores[t.number] is None, -(scores[t.number] or 0.0), t.number))
    weights = np.array([1 / (i + 1) for i in range(len(recipes))])
    return recipes[int(rng.choice(len(recipes), p=weights / weights.sum()))]


def _choose_moves(base: dict[str, Param], rng: np.random.Generator) -> set[str]:
    names = sorted(base)
    counts, probs = zip(*MUTATIONS)
    k = min(len(names), int(rng.choice(counts, p=np.array(probs) / sum(probs))))
    weights = np.array([CATEGORICAL_WEIGHT if isinstance(base[n], (bool, str)) else 1.0 for n in names])
    return {names[i] for i in rng.choice(len(names), size=k, replace=False, p=weights / weights.sum())}


# ---- steps on each parameter's own scale
def _ordered(dist: CategoricalDistribution) -> bool:
    """Choices that are all numbers (filters, batch size): a step goes to the neighbouring choice."""
    return all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in dist.choices)


def _contains(dist: BaseDistribution, value: Param) -> bool:
    try:
        return bool(dist._contains(dist.to_internal_repr(value)))
    except (ValueError, TypeError):
        return False


def _snap(x: float, dist: FloatDistribution | IntDistribution) -> int | float:
    """x clipped into the range, on its step grid; an int for IntDistribution."""
    low, high, step = dist.low, dist.high, dist.step
    x = min(high, max(low, x))
    if step:
        n_max = math.floor((high - low) / step + 1e-9)
        x = low + min(n_max, max(0, round((x - low) / step))) * step
        x = float(f"{x:.12g}")
    return int(round(x)) if isinstance(dist, IntDistribution) else float(x)


def _fit(value: Param, dist: BaseDistribution, rng: np.random.Generator) -> Param:
    """The value itself when the distribution holds it; else the nearest it does (a range that
    depends on another parameter: lr after the optimiser changed), or a random choice."""
    if _contains(dist, value):
        return value
    if isinstance(dist, CategoricalDistribution):
        if _ordered(dist) and isinstance(value, (int, float)) and not isinstance(value, bool):
            return min(dist.choices, key=lambda c: abs(float(c) - value))  # type: ignore[arg-type]
        return dist.choices[int(rng.integers(len(dist.choices)))]
    assert isinstance(dist, (FloatDistribution, IntDistribution))
    try:
        return _snap(float(value), dist)  # type: ignore[arg-type]  # None: the TypeError below
    except (TypeError, ValueError):
        return _snap(dist.low, dist)


def mutate(value: Param, dist: BaseDistribution, rng: np.random.Generator, sigma: float, force: bool = True) -> Param:
    """`value` moved by N(0, sigma) of the distribution's range on its own scale (log for log ranges),
    snapped onto its step grid, inside its bounds; with `force`, at least one step away from `value`.
    Ordered choices move to a neighbour (with probability 2 sigma when not forced); others flip."""
    if isinstance(dist, CategoricalDistribution):
        choices = list(dist.choices)
        if len(choices) < 2:
            return choices[0]
        if _ordered(dist):
            i = choices.index(_fit(value, dist, rng))
            if not force and rng.random() > min(1.0, 2 * sigma):
                return choices[i]
            j = i + (1 if rng.random() < 0.5 else -1)
            j = j if 0 <= j < len(choices) else i - (j - i)
            return choices[j]
        others = [c for c in choices if c != value or type(c) is not type(value)]
        return others[int(rng.integers(len(others)))]
    assert isinstance(dist, (FloatDistribution, IntDistribution))
    low, high, log = float(dist.low), float(dist.high), dist.log
    if high <= low:
        return _snap(low, dist)
    f, g = (math.log, math.exp) if log else (float, float)
    start = _fit(value, dist, rng)
    u = (f(float(start)) - f(low)) / (f(high) - f(low)) + rng.normal(0.0, sigma)  # type: ignore[arg-type]  # a number here

    u = abs(u) % 2.0  # reflected into [0, 1] at both ends
    u = 2.0 - u if u > 1.0 else u
    new = _snap(g(f(low) + u * (f(high) - f(low))), dist)
    if force and new == start:
        step = dist.step or (1 if isinstance(dist, IntDistribution) else None)
        if step:  # one step in the drawn direction, or the other way at a bound
            up = _snap(start + step, dist)
            down = _snap(start - step, dist)
            new = up if (u >= 0.5 and up != start) or down == start else down
    return new


# ---- the dry run: the space function against a trial that answers from a picker
class _DryTrial:
    """Enough of optuna.Trial for a space function: suggest_* answered by `pick`, in suggestion order."""

    def __init__(self, pick: Pick):
        self._pick = pick
        self.params: dict[str, Param] = {}
        self.distributions: dict[str, BaseDistribution] = {}
        self.user_attrs: dict[str, object] = {}

    def _suggest(self, name: str, dist: BaseDistribution) -> Param:
        if name not in self.params:
            self.params[name], self.distributions[name] = self._pick(name, dist), dist
        return self.params[name]

    def suggest_float(self, name: str, low: float, high: float, *, step: float | None = None,
                      log: bool = False) -> Param:
        return self._suggest(name, FloatDistribution(low, high, step=step, log=log))

    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> Param:

        return self._suggest(name, IntDistribution(low, high, step=step, log=log))

    def suggest_categorical(self, name: str, choices: Sequence[Param]) -> Param:
        return self._suggest(name, CategoricalDistribution(choices))

    def set_user_attr(self, key: str, value: object) -> None:
        self.user_attrs[key] = value


def _key(params: dict[str, Param]) -> tuple:
    """A configuration's identity: floats compared at 10 significant digits (step-grid floats differ in the 17th)."""
    return tuple(sorted((k, f"{v:.10g}" if isinstance(v, float) else repr(v)) for k, v in params.items()))


def proposal_source(trial: optuna.trial.FrozenTrial) -> str:
    """Where a study trial's configuration came from ("" for trials of searches before the mix sampler)."""
    return str(trial.user_attrs.get(SOURCE_ATTR, ""))
