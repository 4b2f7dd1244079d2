"""Where the winner of a search sits in its space: the boundary check of the report and `best`.

The winner is judged against its own Optuna distributions (the study's trial: a range may depend
on another parameter, as `wide`'s lr on the optimiser), or, for a search that saved no study, the
range of values tried. A value within EDGE_FRACTION of an end is "on the boundary", except where
the end is a limit of the config itself (config.hard_bounds: dropout 0, a probability 0 or 1) or a
0 at the low end of a linear range: nothing lies beyond those, so there is no advice to widen.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, SupportsFloat

import pandas as pd

from ..config import hard_bounds
from ..fmt import missing, num, plain
from ..results.experiment import PARAM_PREFIX

if TYPE_CHECKING:
    from optuna import Study
    from optuna.distributions import BaseDistribution

# The best value within this fraction of a numeric range's end counts as "on the boundary".
EDGE_FRACTION = 0.05


@dataclass
class Boundary:
    param: str
    best: object  # the winner's value: a number, or an ordered choice
    low: float
    high: float
    basis: str  # "declared" (the search space's range) or "tried" (min/max over the trials)
    edge: str  # "low" or "high"

    def message(self) -> str:
        where = "declared range" if self.basis == "declared" else "range tried"
        return (f"{self.param} = {num(self.best, 3)} sits at the {self.edge} end of the {where} "
                f"[{num(self.low, 3)}, {num(self.high, 3)}]; the optimum may lie beyond it: widen the space")


def declared_ranges(study: Study | None) -> dict[str, BaseDistribution]:
    """{param: one distribution spanning every range the space declared for it}, from the study's
    trials ({} without a study). A range may depend on another parameter (wide's lr on the
    optimiser): the span holds them all, so every trial's point lies on the plot's axis."""
    import optuna.distributions as od

    found: dict[str, BaseDistribution] = {}
    for trial in study.get_trials(deepcopy=False) if study is not None else ():
        for name, dist in trial.distributions.items():
            seen = found.setdefault(name, dist)
            numeric = (od.FloatDistribution, od.IntDistribution)  # the distributions with a low and a high
            if seen is not dist and isinstance(dist, numeric) and isinstance(seen, numeric) and seen != dist:
                low, high = min(seen.low, dist.low), max(seen.high, dist.high)
                found[name] = (od.FloatDistribution(float(low), float(high), log=bool(seen.log and dist.log))
                               if isinstance(seen, od.FloatDistribution) or isinstance(dist, od.FloatDistribution)
                               else od.IntDistribution(int(low), int(high), log=bool(seen.log and dist.log)))
    return found


def trial_distributions(study: Study | None, params: Mapping[str, object]) -> dict[str, BaseDistribution]:
    """The distributions the space declared for the study trial with these parameter values (the
    trial itself: Ray's OptunaSearch tells Optuna every trial it runs); {} without a study or a match."""
    def same(a: object, b: object) -> bool:
        if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
            return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
        return plain(a) == plain(b)

    for trial in study.get_trials(deepcopy=False) if study is not None else ():
        if trial.params.keys() == params.keys() and all(same(trial.params[k], v) for k, v in params.items()):
            return dict(trial.distributions)
    return {}


def find_boundaries(scored: pd.DataFrame, params: list[str], dists: Mapping[str, BaseDistribution]) -> list[Boundary]:
    """The winner's (scored's first row) values at an end of its range. `dists`: the winner's own
    distributions (trial_distributions); without them, the range of values tried."""
    best = scored.iloc[0]
    out = []
    for p in params:
        value = best.get(PARAM_PREFIX + p)
        if missing(value):
            continue
        tried = scored[PARAM_PREFIX + p].dropna()
        b = _boundary(p, value, tried, dists.get(p))
        if b:
            out.append(b)
    return out


def _boundary(p: str, value: SupportsFloat | str, tried: pd.Series, dist: BaseDistribution | None) -> Boundary | None:
    from optuna.distributions import FloatDistribution, IntDistribution

    if isinstance(dist, (FloatDistribution, IntDistribution)):
        low, high, log = dist.low, dist.high, bool(getattr(dist, "log", False))
        step = getattr(dist, "step", None)
        if step and (high - low) / step < 2:
            return None  # a grid of two values has no inside: every value is an "edge"
        return _numeric_edge(p, float(value), low, high, log, "declared")
    if dist is not None and hasattr(dist, "choices"):
        ordered = _ordered_choices(list(dist.choices))
        if ordered is None or len(ordered) < 3:
            return None
        edge = "low" if value == ordered[0] else "high" if value == ordered[-1] else None
        return Boundary(p, value, ordered[0], ordered[-1], "declared", edge) if edge else None
    nums = pd.to_numeric(tried, errors="coerce")
    if nums.isna().any() or nums.nunique() < 3 or is_bool(tried):
        return None  # a range needs at least three distinct numeric values to have an inside
    low, high = float(nums.min()), float(nums.max())
    log = low > 0 and high / low >= 100
    return _numeric_edge(p, float(value), low, high, log, "tried")


def _numeric_edge(p: str, v: float, low: float, high: float, log: bool, basis: str) -> Boundary | None:
    if high <= low:
        return None
    f = (lambda x: math.log(x)) if log and low > 0 and v > 0 else (lambda x: x)
    pos = (f(v) - f(low)) / (f(high) - f(low))
    edge = "low" if pos <= EDGE_FRACTION else "high" if pos >= 1 - EDGE_FRACTION else None
    if edge is None or _cannot_widen(p, low if edge == "low" else high, edge, log):
        return None
    return Boundary(p, v, low, high, basis, edge)


def _cannot_widen(p: str, end: float, edge: str, log: bool) -> bool:
    """The range's end is where the config itself stops (config.hard_bounds: dropout 0, a probability
    0 or 1, a shift of 0 pixels), or a 0 at the low end of a linear range: the winner sitting there is
    a result (no dropout, no erasing), not a range to widen."""
    if edge == "low" and end == 0 and not log:
        return True
    bounds = hard_bounds(p)
    return bounds is not None and end == bounds[0 if edge == "low" else 1]


def _ordered_choices(choices: Sequence[object]) -> list[float] | None:
    numbers = [c for c in choices if isinstance(c, (int, float)) and not isinstance(c, bool)]
    if len(numbers) < len(choices):
        return None  # strings and booleans have no order, so no boundary
    return sorted(numbers)


def is_bool(s: pd.Series) -> bool:
    """A column of booleans, as pandas reads them or as CSV text ("True"/"False")."""
    return pd.api.types.is_bool_dtype(s) or set(map(str, s.dropna().unique())) <= {"True", "False"}
