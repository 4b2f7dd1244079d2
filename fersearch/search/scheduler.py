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

and stops it when it is clearly below (`stop`). Where val_acc holds it (flat,
majority, close) the val_loss each trial reports (`loss_metric`) decides: a trial
whose loss is above the rung's cutoff loss (the 1/rf percentile of the losses
recorded there) by more than z * SE of the difference of two mean cross-entropies
is stopped (`loss`; noise.NoiseRule.decide gives the SE). On hard data every trial
sits at the majority rate for its first epochs while the loss already separates
the learners from the stuck; within noise on the loss too, the trial runs on. SE of the difference of
two accuracies a, b: sqrt(a(1-a)/n + b(1-b)/n). Values are accuracies in
[0, 1] (mode "max"), or error rates (mode "min", the same SE).

Paired (the default, `paired=True`): every trial is scored on the same validation
images and reports which it got right and each one's loss (fersearch.paired). The
cutoff is then compared as a trial: the weakest trial the rung keeps (the lowest
recorded value at or above the cutoff) for val_acc, and the trial with the highest
recorded loss at or below the cutoff loss for val_loss. `close` and the loss test use
z times the paired SE of the trial's difference with that trial (McNemar: models that
agree on most images have a much smaller SE of their difference than two independent
samples), the same z. `few`, `above`, `flat` and `majority` are unchanged, so the
paired rule stops only where the unpaired one held a trial as `close` (or on its
loss margin). A trial or rung without per-image records falls back to the unpaired
margins.

Every decision is kept in `scheduler.decisions` (one dict per rung decision:
trial, rung, value, cutoff, margin, action, reason, the metric that decided,
the loss, cutoff loss and loss margin, whether plain ASHA would have stopped
it, and for the paired rule the trials compared with, the unpaired rule's reason and
margins, and the trial's per-image records, which a resumed search reads back) so the
search can explain itself afterwards. With `log_path` (the driver
passes results/<name>/scheduler.jsonl) each decision is also appended there as
one JSON line as it is made: `read_decisions` gives them to the report. Ray
does not save a scheduler's state (a resumed search gets the scheduler as it
was built), so a resumed NoiseAwareASHA reads that file back
before its first decision: its rungs hold the values recorded before the
interruption and its log continues, on a line of its own (a torn last line,
from a crash mid-append, is cut first).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from ray.tune.schedulers.async_hyperband import AsyncHyperBandScheduler
from ray.tune.schedulers.trial_scheduler import TrialScheduler

from ..io import cut_torn_tail
from ..paired import PerImage, acc_diff_se, as_record, decode, loss_diff_se
from ..results.decisions import DECISIONS_FILE, Decision, DecisionLog, read_decisions
from ..results.noise import LOSS_SD, REASONS, NoiseRule, accuracy_se, loss_cutoff, majority_rate
from ..results.record import Noise, Settings
from .workarounds import asha_bracket

_Bracket: Any = asha_bracket()  # private in Ray: workarounds.py says which of its fields this module reads

__all__ = [
    "DECISIONS_FILE",
    "REASONS",
    "DecisionLog",
    "NoiseAwareASHA",
    "NoiseRule",
    "accuracy_se",
    "majority_rate",
    "read_decisions",
]

def _json_number(v: float | None) -> float | None:
    """NaN as None: the log is JSON, and a decision read back must equal the one made."""
    return None if v is None or math.isnan(v) else float(v)


class _NoiseAwareBracket(_Bracket):
    """ASHA's bracket (rungs, cutoff, records) with NoiseRule deciding each stop."""

    def __init__(self, rule: NoiseRule, decisions: list[Decision], sign: float, *args: object, paired: bool = True,
                 **kwargs: object):
        super().__init__(*args, **kwargs)
        self.rule, self.decisions, self.sign, self.paired = rule, decisions, sign, paired
        self.losses: dict[int, dict[str, float]] = {milestone: {} for milestone, _ in self._rungs}
        # The per-image records (fersearch.paired) of the trials recorded at each rung, by trial id.
        self.images: dict[int, dict[str, PerImage]] = {milestone: {} for milestone, _ in self._rungs}

    def on_result(self, trial, cur_iter: int, cur_rew: float | None, log: bool = True,
                  loss: float | None = None, images: PerImage | None = None) -> str:
        for milestone, recorded in self._rungs:  # highest milestone first, as in _Bracket.on_result
            if cur_iter >= milestone and trial.trial_id in recorded and not self._stop_last_trials:
                break
            if cur_iter < milestone or trial.trial_id in recorded:
                continue
            action = self._decide(trial, milestone, cur_iter, cur_rew, recorded, log, loss, images)
            if cur_rew is not None and not math.isnan(cur_rew):
                recorded[trial.trial_id] = cur_rew
                if loss is not None and not math.isnan(loss):
                    self.losses[milestone][trial.trial_id] = float(loss)
                if images is not None:
                    self.images[milestone][trial.trial_id] = images
            return action
        return TrialScheduler.CONTINUE

    def _decide(self, trial, milestone, cur_iter, cur_rew, recorded: dict, log: bool, loss: float | None,
                images: PerImage | None) -> str:
        cutoff = self.cutoff(recorded)
        losses = list(self.losses[milestone].values())
        cut_loss = loss_cutoff(losses, self.rf) if losses else None
        said = unpaired = None
        refs: dict[str, Any] = {}
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
                args = (acc(value), [acc(o) for o in others], acc(self.sign * cutoff), loss, losses, cut_loss)
                unpaired = said = self.rule.decide(*args)
                if self.paired and images is not None:
                    refs = self._refs(milestone, recorded, cutoff, cut_loss, images)
                    said = self.rule.decide(*args, acc_se=refs.get("acc_se"), loss_se=refs.get("loss_se"))
                reason, margin = said.reason, said.margin
        action = TrialScheduler.STOP if reason in ("stop", "loss") else TrialScheduler.CONTINUE
        if log:
            self.decisions.append(Decision(
                trial_id=trial.trial_id, rung=milestone, iteration=cur_iter, compared=len(recorded),
                value=_json_number(value), cutoff=None if cutoff is None else _json_number(self.sign * cutoff),
                margin=_json_number(margin), action=action, reason=reason,
                metric=said.metric if said else "val_acc", loss=None if loss is None else _json_number(loss),
                loss_cutoff=None if cut_loss is None else _json_number(cut_loss),
                loss_margin=said.loss_margin if said else None,
                asha_would_stop=bool(cutoff is not None and cur_rew is not None and cur_rew < cutoff),
                # the paired rule: the trials it compared with, and what the unpaired rule would have said
                paired=bool(refs.get("acc_ref") or refs.get("loss_ref")),
                ref_trial=refs.get("acc_ref"), loss_ref_trial=refs.get("loss_ref"),
                unpaired_reason=unpaired.reason if unpaired else reason,
                unpaired_margin=_json_number(unpaired.margin if unpaired else margin),
                unpaired_loss_margin=unpaired.loss_margin if unpaired else None,
                per_image=as_record(images) if images is not None else {},
            ))
        return action

    def _refs(self, milestone: int, recorded: dict, cutoff: float, cut_loss: float | None,
              images: PerImage) -> dict[str, Any]:
        """The rung's cutoff as a trial on the same images: the lowest recorded value at or above the
        cutoff (the weakest trial the rung keeps), and for the loss the highest recorded loss at or
        below the cutoff loss; the paired SEs of the trial against each (fersearch.paired)."""
        rung = self.images[milestone]
        out: dict[str, Any] = {}
        kept = [(v, t) for t, v in recorded.items() if t in rung and not math.isnan(v) and v >= cutoff]
        if kept:
            ref = min(kept)[1]
            out.update(acc_ref=ref, acc_se=acc_diff_se(images, rung[ref]))
        if cut_loss is not None:
            low = [(v, t) for t, v in self.losses[milestone].items() if t in rung and v <= cut_loss]
            if low:
                ref = max(low)[1]
                out.update(loss_ref=ref, loss_se=loss_diff_se(images, rung[ref]))
        return out

    def _accuracy(self, metric_value: float) -> float:
        """The metric as an accuracy: itself in mode max, 1 - error rate in mode min."""
        if not 0 <= metric_value <= 1:
            raise ValueError(f"NoiseAwareASHA needs an accuracy or error rate in [0, 1], got {metric_value}")
        return metric_value if self.sign > 0 else 1 - metric_value


class NoiseAwareASHA(AsyncHyperBandScheduler):
    """AsyncHyperBandScheduler whose stops must clear the noise of an n_val-image validation set.

    Same arguments as ASHAScheduler, plus `n_val` (validation images), `majority` (the
    majority-class rate of the validation set, or None), `z` (standard errors a gap must
    exceed), `min_compared` (other values a rung needs before it may stop anyone),
    `loss_metric` and `loss_sd` (the reported loss that decides where val_acc holds, and
    the SD in nats of one image's cross-entropy; loss_sd None: accuracy only) and
    `log_path` (a scheduler.jsonl to append each decision to, and to read back on resume) and
    `paired` (compare with the cutoff trial on the same images where per-image records are reported).
    """

    def __init__(self, *, n_val: int, majority: float | None = None, z: float = 2.0, min_compared: int = 2,
                 loss_metric: str = "val_loss", loss_sd: float | None = LOSS_SD,
                 log_path: str | os.PathLike | None = None, paired: bool = True,
                 time_attr: str = "training_iteration",
                 metric: str | None = None, mode: str | None = None,
                 max_t: int = 100, grace_period: int = 1, reduction_factor: float = 4, brackets: int = 1,
                 stop_last_trials: bool = True):
        super().__init__(time_attr=time_attr, metric=metric, mode=mode, max_t=max_t, grace_period=grace_period,
                         reduction_factor=reduction_factor, brackets=brackets, stop_last_trials=stop_last_trials)
        self.rule = NoiseRule(n_val, majority, z, min_compared, loss_sd)
        self.loss_metric, self.paired = loss_metric, paired
        self.decisions = DecisionLog(log_path)
        self._replayed = False  # the log's earlier decisions are read back once (a resumed search)
        self._grace_period, self._brackets_n = grace_period, brackets
        self._brackets = self._make_brackets()

    def _make_brackets(self) -> list[Any]:  # _NoiseAwareBracket each
        sign = -1.0 if self._mode == "min" else 1.0
        return [_NoiseAwareBracket(self.rule, self.decisions, sign, self._grace_period, self._max_t,
                                   self._reduction_factor, s, stop_last_trials=self._stop_last_trials,
                                   paired=self.paired)
                for s in range(self._brackets_n)]

    def on_trial_add(self, tune_controller, trial) -> None:
        if not self._replayed:
            self._replay()
        super().on_trial_add(tune_controller, trial)

    def _replay(self) -> None:
        """Before the first trial: the rung values and decisions an interrupted search logged."""
        self._replayed = True
        if not self.decisions.path:
            return
        cut_torn_tail(self.decisions.path)  # a crash mid-append: the next decision must start a line of its own
        if self.decisions or len(self._brackets) != 1:
            return
        earlier = read_decisions(self.decisions.path)
        bracket: Any = self._brackets[0]  # a _NoiseAwareBracket (Ray's field is typed as its own _Bracket)
        rungs = dict(bracket._rungs)
        sign = bracket.sign
        for d in earlier:
            if d.rung in rungs and d.value is not None and not math.isnan(d.value):
                rungs[d.rung][d.trial_id] = sign * d.value
                if d.loss is not None and not math.isnan(d.loss):
                    bracket.losses[d.rung][d.trial_id] = d.loss
                images = d.images
                if images is not None:
                    bracket.images[d.rung][d.trial_id] = images
        list.extend(self.decisions, earlier)  # already in the file

    def set_search_properties(self, metric: str | None, mode: str | None, **spec) -> bool:
        if not super().set_search_properties(metric, mode, **spec):
            return False
        for bracket in self._brackets:  # the mode may arrive only now (from TuneConfig)
            assert isinstance(bracket, _NoiseAwareBracket)
            bracket.sign = -1.0 if self._mode == "min" else 1.0
        return True

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        # AsyncHyperBandScheduler.on_trial_result, passing the trial's loss on to the bracket.
        if self._time_attr not in result or self._metric not in result:
            return TrialScheduler.CONTINUE
        if result[self._time_attr] >= self._max_t and self._stop_last_trials:
            action = TrialScheduler.STOP
        else:
            action = self._trial_info[trial.trial_id].on_result(
                trial, result[self._time_attr], self._metric_op * result[self._metric],
                loss=result.get(self.loss_metric), images=decode(result) if self.paired else None)
        self._num_stopped += action == TrialScheduler.STOP
        return action

    def on_trial_complete(self, tune_controller, trial, result: dict) -> None:
        # The final value still fills an unrecorded rung, as in ASHA; nothing is decided, so nothing is logged.
        if self._time_attr not in result or self._metric not in result:
            return
        bracket = self._trial_info.pop(trial.trial_id)
        bracket.on_result(trial, result[self._time_attr], self._metric_op * result[self._metric], log=False,
                          loss=result.get(self.loss_metric), images=decode(result) if self.paired else None)

    def summary(self) -> dict[str, int]:
        """Decisions per reason, plus `held`: keeps where plain ASHA would have stopped the trial."""
        counts = {reason: 0 for reason in REASONS}
        for d in self.decisions:
            counts[d.reason] += 1
        counts["held"] = sum(d.asha_would_stop and d.action == TrialScheduler.CONTINUE for d in self.decisions)
        return counts

    def debug_string(self) -> str:
        held = self.summary()["held"]
        return f"{super().debug_string()}\nkept on noise where ASHA would stop: {held}"


def make_scheduler(run: Settings, noise: Noise, exp_dir: Path) -> TrialScheduler:
    """The search's scheduler: FIFO, or this ASHA on the settings' metric with the validation split's
    noise inputs (its size, majority-class rate, z), logging to <exp_dir>/scheduler.jsonl."""
    from ray.tune.schedulers import FIFOScheduler

    if run.scheduler == "fifo":
        return FIFOScheduler()
    # Absolute: Ray pickles the scheduler, and a resumed search may run from another cwd.
    return NoiseAwareASHA(n_val=max(1, noise.n_val), majority=noise.majority, z=noise.z,
                          log_path=exp_dir.resolve() / DECISIONS_FILE, time_attr="training_iteration",
                          metric=run.metric, mode=run.mode, max_t=run.max_epochs, grace_period=run.grace_period,
                          reduction_factor=run.reduction_factor)
