"""NoiseAwareASHA: never stops a trial on a gap the validation set cannot resolve.

Crafted sequences of reported results, fed straight to the scheduler (no training,
no Ray cluster); every case is also checked against plain ASHA, which does stop.
"""

from __future__ import annotations

import itertools
import pickle
from dataclasses import dataclass

import numpy as np
import pytest
from ray.tune.schedulers import ASHAScheduler, TrialScheduler

from fersearch import paired
from fersearch.search.scheduler import (
    NoiseAwareASHA,
    NoiseRule,
    accuracy_se,
    majority_rate,
)

CONTINUE, STOP = TrialScheduler.CONTINUE, TrialScheduler.STOP
_IDS = itertools.count()


@dataclass(frozen=True)
class FakeTrial:
    trial_id: str


def make(n_val=600, majority=0.25, paired=True, **kw):
    kw = {"metric": "val_acc", "mode": "max", "max_t": 10, "grace_period": 1, "reduction_factor": 3, **kw}
    return NoiseAwareASHA(n_val=n_val, majority=majority, paired=paired, **kw), ASHAScheduler(**kw)


def feed(scheduler, values, iteration=1, metric="val_acc"):
    """Report one value per new trial at `iteration`; the actions, in order."""
    actions = []
    for value in values:
        trial = FakeTrial(f"t{next(_IDS)}")
        scheduler.on_trial_add(None, trial)
        actions.append(scheduler.on_trial_result(None, trial, {"training_iteration": iteration, metric: value}))
    return actions


def test_standard_error_of_an_accuracy():
    assert accuracy_se(0.5, 600) == pytest.approx(0.0204, abs=1e-4)
    assert accuracy_se(0.25, 600) == pytest.approx(0.0177, abs=1e-4)
    assert accuracy_se(0.0, 600) == 0 and accuracy_se(1.2, 10) == 0  # clipped to [0, 1]
    assert majority_rate(np.array([0, 1, 1, 1, -1])) == 0.75


def test_everyone_at_the_majority_rate_stops_nobody():
    """A 10-epoch benchmark run: at epoch 1 every trial sat at 0.208-0.217; ASHA stopped 9 of 16 there."""
    values = [0.212, 0.215, 0.208, 0.217, 0.210, 0.213, 0.209, 0.216, 0.211, 0.214, 0.208, 0.212]
    ours, asha = make(majority=0.215)
    asha_stops = feed(asha, values).count(STOP)
    assert asha_stops >= 4
    assert feed(ours, values) == [CONTINUE] * len(values)
    assert {d.reason for d in ours.decisions} <= {"few", "above", "flat"}
    assert ours.summary()["held"] == asha_stops  # each of ASHA's stops shows up as a hold


def test_second_trial_is_never_judged_against_the_first_alone():
    ours, asha = make()
    assert feed(asha, [0.60, 0.30]) == [CONTINUE, STOP]  # ASHA: one value is enough to stop on
    assert feed(ours, [0.60, 0.30]) == [CONTINUE, CONTINUE]
    assert [d.reason for d in ours.decisions] == ["few", "few"]


def test_a_clear_gap_stops_and_a_gap_within_noise_does_not():
    ours, _ = make()  # n_val 600: z * SE of a difference near 0.5 is about 0.058
    assert feed(ours, [0.50, 0.56, 0.62]) == [CONTINUE] * 3
    assert feed(ours, [0.55, 0.46]) == [CONTINUE, STOP]  # cutoffs 0.58, then 0.56
    close, stop = ours.decisions[-2:]
    assert (close.reason, stop.reason) == ("close", "stop")
    assert close.cutoff == pytest.approx(0.58) and stop.cutoff == pytest.approx(0.56)
    assert close.asha_would_stop and stop.asha_would_stop
    assert close.cutoff - close.value <= close.margin
    assert stop.cutoff - stop.value > stop.margin > 0.05


def test_the_margin_shrinks_with_a_bigger_validation_set():
    values = [0.50, 0.56, 0.62, 0.53]  # the last is 0.05 below the cutoff, 0.58
    assert feed(make(n_val=600)[0], values)[-1] == CONTINUE
    assert feed(make(n_val=20_000)[0], values)[-1] == STOP


def test_flat_rung_holds_even_a_clearly_lower_trial():
    """Values compared with are ties: the cutoff is a pick among them, so the rung ranks nobody yet."""
    ours, asha = make(majority=None)
    values = [0.40, 0.41, 0.405, 0.30]
    assert feed(asha, values)[-1] == STOP
    assert feed(ours, values)[-1] == CONTINUE
    assert ours.decisions[-1].reason == "flat"


def test_trial_and_cutoff_near_the_majority_rate_hold():
    ours, asha = make(majority=0.25)  # clearly above majority: > 0.25 + 2 * 0.0177 = 0.285
    values = [0.22, 0.28, 0.27, 0.19]  # spread 0.06 is beyond noise, but nobody has learned yet
    assert feed(asha, values)[-1] == STOP
    assert feed(ours, values)[-1] == CONTINUE
    assert ours.decisions[-1].reason == "majority"
    # Once the cutoff is clearly above the majority rate, a trial stuck there is stopped.
    ours, _ = make(majority=0.25)
    assert feed(ours, [0.45, 0.50, 0.55, 0.25]) == [CONTINUE] * 3 + [STOP]


def test_later_rungs_are_judged_on_their_own_values():
    ours, _ = make()
    trials = [FakeTrial(f"t{i}") for i in range(4)]
    for t in trials:
        ours.on_trial_add(None, t)
    # rung 1: all tied near the majority rate: nobody stops
    for t, v in zip(trials, (0.25, 0.26, 0.25, 0.24)):
        assert ours.on_trial_result(None, t, {"training_iteration": 1, "val_acc": v}) == CONTINUE
    # rung 3: three have learned, the last has not
    actions = [ours.on_trial_result(None, t, {"training_iteration": 3, "val_acc": v})
               for t, v in zip(trials, (0.50, 0.62, 0.58, 0.26))]
    assert actions == [CONTINUE] * 3 + [STOP]
    assert [d.rung for d in ours.decisions] == [1] * 4 + [3] * 4
    assert ours.decisions[-1].reason == "stop"


def test_mode_min_reads_error_rates():
    ours = NoiseAwareASHA(n_val=600, majority=0.25, metric="val_err", mode="min", max_t=10, reduction_factor=3)
    assert feed(ours, [0.50, 0.44, 0.38, 0.47], metric="val_err")[-1] == CONTINUE  # 0.05 worse: noise
    assert feed(ours, [0.60], metric="val_err") == [STOP]
    assert ours.decisions[-1].reason == "stop" and ours.decisions[-1].cutoff < 0.5


def test_mode_from_tune_config_and_values_outside_0_1_are_refused():
    ours = NoiseAwareASHA(n_val=600, max_t=10)
    assert ours.set_search_properties("val_loss", "min")
    with pytest.raises(ValueError, match=r"accuracy or error rate in \[0, 1\]"):
        feed(ours, [1.9, 1.8, 1.7], metric="val_loss")
    with pytest.raises(ValueError, match="n_val"):
        NoiseRule(0)


def test_completion_fills_the_rung_silently_and_state_pickles(tmp_path):
    ours, _ = make()
    trial = FakeTrial("done")
    ours.on_trial_add(None, trial)
    ours.on_trial_complete(None, trial, {"training_iteration": 1, "val_acc": 0.5})
    assert ours.decisions == [] and list(ours._brackets[0]._rungs[-1][1].values()) == [0.5]
    feed(ours, [0.6, 0.55])
    ours.save(str(tmp_path / "s.pkl"))
    again, _ = make()
    again.restore(str(tmp_path / "s.pkl"))
    assert again.decisions == ours.decisions
    assert again._brackets[0].decisions is again.decisions  # still one shared log after a restore
    assert pickle.loads(pickle.dumps(again.rule)).n_val == 600


def test_max_t_still_stops_and_nan_is_kept():
    ours, _ = make()
    assert feed(ours, [0.5], iteration=10) == [STOP]
    assert feed(ours, [float("nan")], iteration=1) == [CONTINUE]
    assert ours.decisions[-1].reason == "no value"


def test_decisions_go_to_the_log_file_and_a_resumed_scheduler_reads_them_back(tmp_path):
    """Ray does not save a scheduler's state: a resumed search gets it as built, so it rebuilds
    its rungs (and its log) from scheduler.jsonl before the first decision."""
    from fersearch.search.scheduler import DECISIONS_FILE, read_decisions

    log = tmp_path / DECISIONS_FILE
    first = NoiseAwareASHA(n_val=600, majority=0.25, log_path=log, metric="val_acc", mode="max", max_t=10,
                           grace_period=1, reduction_factor=3)
    fresh = pickle.dumps(first)  # what tuner.pkl holds: the scheduler before any trial
    assert feed(first, [0.50, 0.56, 0.62]) == [CONTINUE] * 3
    assert read_decisions(tmp_path) == first.decisions and len(first.decisions) == 3
    resumed = pickle.loads(fresh)
    assert feed(resumed, [0.46]) == [STOP]  # judged against the three values logged before
    assert resumed.decisions[-1].compared == 3 and len(resumed.decisions) == 4
    assert read_decisions(log) == resumed.decisions  # appended, nothing written twice
    with open(log, "a") as f:
        f.write('{"trial_id": "torn", "ru')  # a crash in the middle of an append
    assert len(read_decisions(log)) == 4
    assert read_decisions(tmp_path / "nothing") == []


WRITER = """
import os, sys, time
sys.path.insert(0, {tests!r})
from test_scheduler import CONTINUE, FakeTrial
from fersearch.search.scheduler import NoiseAwareASHA
s = NoiseAwareASHA(n_val=600, majority=0.25, log_path={log!r}, metric="val_acc", mode="max", max_t=10,
                   grace_period=1, reduction_factor=3)
for i, value in enumerate([0.50, 0.56, 0.62]):  # trial ids of the writer's own ("w0"...): the test's feed goes on
    s.on_trial_add(None, FakeTrial(f"w{{i}}"))
    assert s.on_trial_result(None, FakeTrial(f"w{{i}}"), {{"training_iteration": 1, "val_acc": value}}) == CONTINUE
fd = os.open({log!r}, os.O_WRONLY | os.O_APPEND)
os.write(fd, b'{{"trial_id": "torn", "rung": 1, "val')  # the first half of a fourth decision's line
print("half written", flush=True)
time.sleep(60)
"""


def test_a_writer_killed_mid_line_leaves_no_line_the_resumed_scheduler_glues_onto(tmp_path):
    """A real process appending to scheduler.jsonl is SIGKILLed in the middle of a line; the
    resumed scheduler cuts the torn tail before its first append, so its decision is a line
    of its own (glued on, it would be unreadable and lost at the next replay)."""
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    from fersearch.search.scheduler import DECISIONS_FILE, read_decisions

    log = tmp_path / DECISIONS_FILE
    code = WRITER.format(tests=str(Path(__file__).parent), log=str(log))
    writer = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "half written"
        os.kill(writer.pid, signal.SIGKILL)
        assert writer.wait(timeout=30) == -signal.SIGKILL
    finally:
        writer.kill()
        writer.stdout.close()
    assert not log.read_bytes().endswith(b"\n") and len(read_decisions(log)) == 3
    resumed = NoiseAwareASHA(n_val=600, majority=0.25, log_path=log, metric="val_acc", mode="max", max_t=10,
                             grace_period=1, reduction_factor=3)
    assert feed(resumed, [0.46]) == [STOP]  # judged against the three whole decisions
    lines = log.read_text().splitlines()
    assert len(lines) == 4 and "torn" not in log.read_text()
    assert read_decisions(log) == resumed.decisions and resumed.decisions[-1].compared == 3
    again = NoiseAwareASHA(n_val=600, majority=0.25, log_path=log, metric="val_acc", mode="max", max_t=10,
                           grace_period=1, reduction_factor=3)
    feed(again, [0.70])
    assert len(again.decisions) == 5  # the resumed decision survived the next replay


# ------------------------------------------------------------------ the loss decides where val_acc cannot
def feed_pairs(scheduler, pairs, iteration=1):
    """Report (val_acc, val_loss) once per new trial at `iteration`; the actions, in order."""
    actions = []
    for value, loss in pairs:
        trial = FakeTrial(f"t{next(_IDS)}")
        scheduler.on_trial_add(None, trial)
        actions.append(scheduler.on_trial_result(None, trial, {"training_iteration": iteration, "val_acc": value,
                                                               "val_loss": loss}))
    return actions


LEARNERS = [(0.25, 1.60), (0.25, 1.62), (0.25, 1.64), (0.25, 1.66)]  # hard data, epoch 2: accuracy says nothing yet


def test_loss_stops_a_clearly_worse_trial_where_accuracies_tie_at_the_majority_rate():
    ours, asha = make(n_val=400)
    assert feed(asha, [v for v, _ in LEARNERS] + [0.25])[-1] == CONTINUE  # a tie: plain ASHA keeps it too
    margin = 2 * 0.6 * (2 / 400) ** 0.5  # z * loss_sd * sqrt(2 / n_val): 0.085 nats
    assert ours.rule.loss_margin() == pytest.approx(margin)
    assert feed_pairs(ours, LEARNERS + [(0.25, 1.85)]) == [CONTINUE] * 4 + [STOP]
    stop = ours.decisions[-1]
    assert (stop.reason, stop.metric, stop.action) == ("loss", "val_loss", STOP)
    assert stop.loss_cutoff == pytest.approx(np.percentile([1.60, 1.62, 1.64, 1.66], 100 / 3))
    assert stop.loss - stop.loss_cutoff > stop.loss_margin == pytest.approx(margin)
    assert not stop.asha_would_stop  # on val_acc it is a tie
    assert all(d.metric == "val_acc" for d in ours.decisions[:-1])  # the keeps were decided on val_acc


@pytest.mark.parametrize("gap", [0.0, 0.04, 0.08])
def test_loss_within_noise_of_the_cutoff_never_stops(gap):
    ours, _ = make(n_val=400)
    cut = float(np.percentile([1.60, 1.62, 1.64, 1.66], 100 / 3))
    assert feed_pairs(ours, LEARNERS + [(0.25, cut + gap)])[-1] == CONTINUE
    keep = ours.decisions[-1]
    assert keep.metric == "val_acc" and keep.reason in ("above", "flat", "majority", "close")
    assert keep.loss - keep.loss_cutoff <= keep.loss_margin


def test_loss_never_overrules_a_clearly_better_accuracy_and_can_be_turned_off():
    ours, _ = make(n_val=400)  # 0.40 is clearly above the cutoff (0.25): its poor loss does not count
    assert feed_pairs(ours, LEARNERS + [(0.40, 2.10)])[-1] == CONTINUE
    assert ours.decisions[-1].reason == "above" and ours.decisions[-1].loss_margin is None  # not asked
    accuracy_only = NoiseAwareASHA(n_val=400, majority=0.25, loss_sd=None, metric="val_acc", mode="max", max_t=10,
                                   reduction_factor=3)
    assert feed_pairs(accuracy_only, LEARNERS + [(0.25, 1.85)])[-1] == CONTINUE
    assert accuracy_only.decisions[-1].reason == "above"
    no_loss, _ = make(n_val=400)  # a trainable that reports no loss: accuracy only
    assert feed(no_loss, [0.25] * 5) == [CONTINUE] * 5
    with pytest.raises(ValueError, match="loss_sd"):
        NoiseRule(400, loss_sd=0)


def test_every_stop_is_clear_on_the_metric_that_decided():
    """Random rungs of (accuracy, loss) pairs: a stop is beyond the noise of the metric the log names,
    and a rung whose accuracies and losses all lie within noise stops nobody."""
    rng = np.random.default_rng(0)
    for _ in range(200):
        ours, _ = make(n_val=400, reduction_factor=float(rng.choice([2, 3, 4])))
        k = int(rng.integers(3, 12))
        accs = np.clip(0.25 + rng.choice([0, 0.15], k) * rng.random(k), 0, 1)
        losses = 1.85 - 0.4 * rng.random(k) * (accs > 0.26) + 0.05 * rng.random(k)
        feed_pairs(ours, zip(accs, losses))
        for d in ours.decisions:
            if d.action == STOP and d.metric == "val_acc":
                assert d.reason == "stop" and d.cutoff - d.value > d.margin
            elif d.action == STOP:
                assert d.reason == "loss" and d.loss - d.loss_cutoff > d.loss_margin
                assert d.value - d.cutoff <= d.margin  # accuracy could not tell it apart
    tight, _ = make(n_val=400)
    pairs = [(0.25, 1.80 + 0.08 * x) for x in rng.random(12)]  # losses within 0.08 < 0.085 of one another
    assert feed_pairs(tight, pairs) == [CONTINUE] * 12


def test_a_resumed_scheduler_reads_the_losses_back(tmp_path):
    from fersearch.search.scheduler import DECISIONS_FILE

    kw = {"n_val": 400, "majority": 0.25, "log_path": tmp_path / DECISIONS_FILE, "metric": "val_acc", "mode": "max",
          "max_t": 10, "grace_period": 1, "reduction_factor": 3}
    first = NoiseAwareASHA(**kw)
    fresh = pickle.dumps(first)
    assert feed_pairs(first, LEARNERS) == [CONTINUE] * 4
    resumed = pickle.loads(fresh)
    assert feed_pairs(resumed, [(0.25, 1.85)]) == [STOP]
    assert resumed.decisions[-1].reason == "loss" and resumed.decisions[-1].compared == 4


# ------------------------------------------------------------------ paired: the same validation images
def correct_on(n_right, n=400, start=0):
    """A correctness vector: right on images start .. start + n_right - 1 (of n)."""
    v = np.zeros(n, dtype=bool)
    v[start:start + n_right] = True
    return v


def feed_images(scheduler, vectors, losses=None, iteration=1):
    """Report one trial per correctness vector (its val_acc is the vector's mean; with `losses`, per-image
    losses whose mean is the reported val_loss); the trial ids and actions, in order."""
    ids, actions = [], []
    for i, v in enumerate(vectors):
        trial = FakeTrial(f"t{next(_IDS)}")
        scheduler.on_trial_add(None, trial)
        result = {"training_iteration": iteration, "val_acc": float(v.mean())}
        if losses is not None:
            result.update(paired.encode(v, losses[i]), val_loss=float(np.mean(np.rint(losses[i] * 16) / 16)))
        else:
            result.update(paired.encode(v, None))
        ids.append(trial.trial_id)
        actions.append(scheduler.on_trial_result(None, trial, result))
    return ids, actions


RUNG = [correct_on(200), correct_on(224), correct_on(248)]  # 0.50, 0.56, 0.62: cutoff (rf 3) 0.58, kept from 0.62


def test_paired_rule_stops_a_trial_the_unpaired_rule_holds_when_it_agrees_with_the_cutoff_trial():
    """0.53 against a cutoff of 0.58 on 400 images: unpaired, a gap of 0.05 is within z * 0.035 = 0.070.
    The trial is right on a subset of the cutoff trial's images (36 fewer, none more): the paired SE of
    the difference is sqrt(36 - 36^2/400)/400 = 0.0143, the margin 0.029, and the gap is beyond it."""
    ours, _ = make(n_val=400)
    ids, actions = feed_images(ours, [*RUNG, correct_on(212)])
    assert actions == [CONTINUE] * 3 + [STOP]
    d = ours.decisions[-1]
    assert (d.reason, d.unpaired_reason, d.paired, d.ref_trial) == ("stop", "close", True, ids[2])
    assert d.margin == pytest.approx(2 * (36 - 36**2 / 400) ** 0.5 / 400)
    assert d.cutoff - d.value <= d.unpaired_margin == pytest.approx(ours.rule.margin(0.53, 0.58))
    assert d.cutoff - d.value > d.margin
    # The same trial under the unpaired rule is held, for the reason the paired rule logged beside its stop.
    unpaired, _ = make(n_val=400, paired=False)
    assert feed_images(unpaired, [*RUNG, correct_on(212)])[1][-1] == CONTINUE
    assert unpaired.decisions[-1].reason == "close" and not unpaired.decisions[-1].paired


def test_paired_rule_holds_a_trial_that_disagrees_with_the_cutoff_trial_on_many_images():
    """0.53 again, but right on 64 images the cutoff trial gets wrong and wrong on 100 it gets right: the
    paired SE is sqrt(164 - 36^2/400)/400 = 0.0317, the margin 0.063 > the gap 0.05: both rules hold."""
    ours, _ = make(n_val=400)
    loose = correct_on(148) | correct_on(64, start=248)
    assert loose.sum() == 212
    _, actions = feed_images(ours, [*RUNG, loose])
    assert actions == [CONTINUE] * 4
    d = ours.decisions[-1]
    assert (d.reason, d.unpaired_reason) == ("close", "close")
    assert d.margin == pytest.approx(2 * (164 - 36**2 / 400) ** 0.5 / 400)
    assert d.cutoff - d.value <= min(d.margin, d.unpaired_margin)


def test_paired_rule_keeps_the_guards_few_flat_and_majority():
    """Pairing narrows only the margin against the cutoff: a rung with too few values, a flat rung and a
    rung at the majority rate hold whatever the images say."""
    ours, _ = make(n_val=400, majority=None)
    assert feed_images(ours, [correct_on(248), correct_on(100)])[1] == [CONTINUE] * 2  # few
    flat, _ = make(n_val=400, majority=None)
    assert feed_images(flat, [correct_on(160), correct_on(164), correct_on(162), correct_on(120)])[1][-1] == CONTINUE
    assert flat.decisions[-1].reason == "flat"
    low, _ = make(n_val=400, majority=0.25)
    assert feed_images(low, [correct_on(80), correct_on(112), correct_on(108), correct_on(76)])[1][-1] == CONTINUE
    assert low.decisions[-1].reason == "majority"


def test_paired_loss_stops_where_the_assumed_loss_sd_holds_and_both_hold_on_a_noisy_difference():
    """Accuracies tie at the majority rate; the last trial's loss is 0.07 nats above the cutoff trial's on
    every image. Unpaired (loss_sd 0.6) the margin is 0.085 nats: held. Paired, the per-image
    differences barely vary: stopped. With per-image differences of SD 1 nat, the paired margin
    (2 * 1 / sqrt(400) = 0.1) holds it too."""
    rng = np.random.default_rng(0)
    base = rng.uniform(1.2, 2.0, 400)
    stuck = correct_on(100)
    learners = [base + d for d in (0.0, 0.02, 0.04, 0.06)]
    ours, _ = make(n_val=400)
    tight = learners[1] + 0.07  # the loss-cutoff trial is the second (its loss is the highest below the cutoff)
    ids, actions = feed_images(ours, [stuck] * 5, [*learners, tight])
    d = ours.decisions[-1]
    assert actions[-1] == STOP and d.reason == "loss" and d.loss_ref_trial == ids[1]
    assert d.unpaired_reason != "loss" and d.unpaired_loss_margin == pytest.approx(ours.rule.loss_margin())
    noisy = learners[1] + 0.07 + rng.choice([-1.0, 1.0], 400)
    noisy += tight.mean() - noisy.mean()
    held, _ = make(n_val=400)
    _, actions = feed_images(held, [stuck] * 5, [*learners, noisy])
    assert actions[-1] == CONTINUE and held.decisions[-1].loss_margin > 0.09


def test_a_resumed_scheduler_reads_the_per_image_records_back(tmp_path):
    log = tmp_path / "scheduler.jsonl"
    first = NoiseAwareASHA(n_val=400, majority=0.25, log_path=log, metric="val_acc", mode="max", max_t=10,
                           reduction_factor=3)
    feed_images(first, RUNG)
    again = NoiseAwareASHA(n_val=400, majority=0.25, log_path=log, metric="val_acc", mode="max", max_t=10,
                           reduction_factor=3)
    _, actions = feed_images(again, [correct_on(212)])
    assert actions == [STOP] and again.decisions[-1].paired  # compared with the replayed cutoff trial
