"""ASHA that never decides on noise: a Ray Tune scheduler for small validation sets.

Ray's ASHA stops a trial at a rung when its value is below the rung's cutoff
(the 1 - 1/reduction_factor percentile of the values recorded there), however
small the gap. On hard data every trial sits at the majority-class rate for
its first epochs, and a gap of 0.005 on 600 validation images is noise: the
standard error of an accuracy p on n images is sqrt(p (1 - p) / n), about
0.02 at p = 0.5, n = 600. `NoiseAwareASHA` keeps ASHA's rungs, cutoff and
bookkeeping and adds one question before each stop: can the trial's value be
told apart from the values it is compared with? At a rung it keeps a trial when

  few        the rung holds fewer than `min_compared` other values;
  above      it is at or above the cutoff (plain ASHA keeps it too);
  flat       the values it is compared with lie within noise of one another
             (max - min <= z * SE of their difference): the cutoff is a pick
             among ties, so the rung cannot rank anyone yet;
  majority   neither the trial nor the cutoff is clearly above the
             majority-class rate (by z * SE): nobody has learned anything yet;
  close      it is below the cutoff by z * SE of the difference or less;

and stops it only when it is clearly below (`stop`). SE of the difference of
two accuracies a, b: sqrt(a(1-a)/n + b(1-b)/n). Values are accuracies in
[0, 1] (mode "max"), or error rates (mode "min", the same SE).

Every decision is kept in `scheduler.decisions` (one dict per rung decision:
trial, rung, value, cutoff, margin, action, reason and whether plain ASHA would
have stopped it) so the search can explain itself afterwards. Not wired into
the driver here; construct it as ASHAScheduler plus n_val and majority.
"""

from __future__ import annotations

import math
from typing import Any, Optional

import numpy as np
from ray.tune.schedulers.async_hyperband import AsyncHyperBandScheduler, _Bracket
from ray.tune.schedulers.trial_scheduler import TrialScheduler

REASONS = {
    "few": "the rung holds too few values to compare with",
    "above": "at or above the rung's cutoff",
    "flat": "the rung's values are within noise of one another",
    "majority": "neither the trial nor the cutoff is clearly above the majority-class rate",
    "close": "below the cutoff, but within noise of it",
    "stop": "clearly below the rung's cutoff",
    "no value": "no value reported",
}


def accuracy_se(p: float, n: int) -> float:
    """Standard error of an accuracy p measured on n images (binomial)."""
    p = min(max(float(p), 0.0), 1.0)
    return math.sqrt(p * (1 - p) / n)


class NoiseRule:
    """The test behind each stop: is a gap bigger than z standard errors on n_val images?"""

    def __init__(self, n_val: int, majority: float | None = None, z: float = 2.0, min_compared: int = 2):
        if n_val < 1:
            raise ValueError(f"n_val must be >= 1 (the validation set's size), got {n_val}")
        if majority is not None and not 0 <= majority <= 1:
            raise ValueError(f"majority must be a rate in [0, 1], got {majority}")
        self.n_val, self.majority, self.z, self.min_compared = int(n_val), majority, float(z), int(min_compared)

    def margin(self, a: float, b: float) -> float:
        """z * SE of the difference of two accuracies a and b on n_val images."""
        return self.z * math.hypot(accuracy_se(a, self.n_val), accuracy_se(b, self.n_val))

    def judge(self, value: float, others: list[float], cutoff: float) -> tuple[str, float]:
        """(reason, margin) for an accuracy `value` at a rung whose other accuracies are `others`."""
        margin = self.margin(value, cutoff)
        if len(others) < self.min_compared:
            return "few", margin
        if value >= cutoff:
            return "above", margin
        low, high = min(others), max(others)
        if high - low <= self.margin(low, high):
            return "flat", margin
        if self.majority is not None:
            clearly_above = self.majority + self.z * accuracy_se(self.majority, self.n_val)
            if value <= clearly_above and cutoff <= clearly_above:
                return "majority", margin
        if cutoff - value <= margin:
            return "close", margin
        return "stop", margin


class _NoiseAwareBracket(_Bracket):
    """ASHA's bracket (rungs, cutoff, records) with NoiseRule deciding each stop."""

    def __init__(self, rule: NoiseRule, decisions: list[dict], sign: float, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.rule, self.decisions, self.sign = rule, decisions, sign

    def on_result(self, trial, cur_iter: int, cur_rew: Optional[float], log: bool = True) -> str:
        for milestone, recorded in self._rungs:  # highest milestone first, as in _Bracket.on_result
            if cur_iter >= milestone and trial.trial_id in recorded and not self._stop_last_trials:
                break
            if cur_iter < milestone or trial.trial_id in recorded:
                continue
            action = self._decide(trial, milestone, cur_iter, cur_rew, recorded, log)
            if cur_rew is not None and not math.isnan(cur_rew):
                recorded[trial.trial_id] = cur_rew
            return action
        return TrialScheduler.CONTINUE

    def _decide(self, trial, milestone, cur_iter, cur_rew, recorded: dict, log: bool) -> str:
        cutoff = self.cutoff(recorded)
        entry = {"trial_id": trial.trial_id, "rung": milestone, "iteration": cur_iter, "compared": len(recorded)}
        if cur_rew is None or math.isnan(cur_rew):
            reason, margin, value = "no value", float("nan"), float("nan")
        else:
            # Rewards are signed (ASHA maximises sign * metric); the rule reads accuracies.
            value = self.sign * cur_rew
            others = [self.sign * v for v in recorded.values() if not math.isnan(v)]
            acc = self._accuracy
            if cutoff is None or math.isnan(cutoff):
                reason, margin = "few", float("nan")
            else:
                reason, margin = self.rule.judge(acc(value), [acc(o) for o in others], acc(self.sign * cutoff))
        action = TrialScheduler.STOP if reason == "stop" else TrialScheduler.CONTINUE
        if log:
            self.decisions.append({
                **entry, "value": value, "cutoff": None if cutoff is None else float(self.sign * cutoff),
                "margin": margin, "action": action, "reason": reason,
                "asha_would_stop": bool(cutoff is not None and cur_rew is not None and cur_rew < cutoff),
            })
        return action

    def _accuracy(self, metric_value: float) -> float:
        """The metric as an accuracy: itself in mode max, 1 - error rate in mode min."""
        if not 0 <= metric_value <= 1:
            raise ValueError(f"NoiseAwareASHA needs an accuracy or error rate in [0, 1], got {metric_value}")
        return metric_value if self.sign > 0 else 1 - metric_value


class NoiseAwareASHA(AsyncHyperBandScheduler):
    """AsyncHyperBandScheduler whose stops must clear the noise of an n_val-image validation set.

    Same arguments as ASHAScheduler, plus `n_val` (validation images), `majority` (the
    majority-class rate of the validation set, or None), `z` (standard errors a gap must
    exceed) and `min_compared` (other values a rung needs before it may stop anyone).
    """

    def __init__(self, *, n_val: int, majority: float | None = None, z: float = 2.0, min_compared: int = 2,
                 time_attr: str = "training_iteration", metric: Optional[str] = None, mode: Optional[str] = None,
                 max_t: int = 100, grace_period: int = 1, reduction_factor: float = 4, brackets: int = 1,
                 stop_last_trials: bool = True):
        super().__init__(time_attr=time_attr, metric=metric, mode=mode, max_t=max_t, grace_period=grace_period,
                         reduction_factor=reduction_factor, brackets=brackets, stop_last_trials=stop_last_trials)
        self.rule = NoiseRule(n_val, majority, z, min_compared)
        self.decisions: list[dict] = []
        self._grace_period, self._brackets_n = grace_period, brackets
        self._brackets = self._make_brackets()

    def _make_brackets(self) -> list[_NoiseAwareBracket]:
        sign = -1.0 if self._mode == "min" else 1.0
        return [_NoiseAwareBracket(self.rule, self.decisions, sign, self._grace_period, self._max_t,
                                   self._reduction_factor, s, stop_last_trials=self._stop_last_trials)
                for s in range(self._brackets_n)]

    def set_search_properties(self, metric: Optional[str], mode: Optional[str], **spec) -> bool:
        if not super().set_search_properties(metric, mode, **spec):
            return False
        for bracket in self._brackets:  # the mode may arrive only now (from TuneConfig)
            bracket.sign = -1.0 if self._mode == "min" else 1.0
        return True

    def on_trial_complete(self, tune_controller, trial, result: dict) -> None:
        # The final value still fills an unrecorded rung, as in ASHA; nothing is decided, so nothing is logged.
        if self._time_attr not in result or self._metric not in result:
            return
        bracket = self._trial_info.pop(trial.trial_id)
        bracket.on_result(trial, result[self._time_attr], self._metric_op * result[self._metric], log=False)

    def summary(self) -> dict[str, int]:
        """Decisions per reason, plus `held`: keeps where plain ASHA would have stopped the trial."""
        counts = {reason: 0 for reason in REASONS}
        for d in self.decisions:
            counts[d["reason"]] += 1
        counts["held"] = sum(d["asha_would_stop"] and d["action"] == TrialScheduler.CONTINUE for d in self.decisions)
        return counts

    def debug_string(self) -> str:
        held = self.summary()["held"]
        return f"{super().debug_string()}\nkept on noise where ASHA would stop: {held}"


def majority_rate(labels: np.ndarray) -> float:
    """Share of the most common label: the accuracy of always answering it."""
    labels = np.asarray(labels)
    labels = labels[labels >= 0]
    return float(np.bincount(labels).max() / len(labels)) if len(labels) else 0.0
