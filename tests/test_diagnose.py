"""Each diagnosis of report/diagnose.py on hand-made trials, history and scheduler decisions (no training)."""

from __future__ import annotations

import pandas as pd

from fersearch.report.analysis import Boundary, rank_trials
from fersearch.report.diagnose import diagnose, held_rungs, loss_stops, noise_stops, seed_comparison, still_improving
from fersearch.results.decisions import Decision
from fersearch.results.record import record_from_json

VAL = {"Angry": 100, "Disgust": 20, "Fear": 100, "Happy": 150, "Sad": 100, "Surprise": 80, "Neutral": 50}  # 600
RAW = {"seed": 0, "trials": 9, "max_epochs": 10, "reduction_factor": 3, "grace_period": 1, "scheduler": "asha",
       "sampler": "tpe", "data": {"counts": {"val": VAL}}}
META = record_from_json(RAW)
MAJORITY = 150 / 600


def frames(curves: dict[str, list[float]], status: dict[str, str] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """trials.csv / history.csv for trials with these val_acc curves (ranked as the analysis does)."""
    history = pd.DataFrame([{"trial_id": t, "epoch": e + 1, "val_acc": v, "train_loss": 1.0, "val_loss": 1.0}
                            for t, accs in curves.items() for e, v in enumerate(accs)])
    trials = pd.DataFrame([{"trial_id": t, "status": (status or {}).get(t, "completed"), "epochs": len(a),
                            "best_val_acc": max(a), "best_epoch": a.index(max(a)) + 1} for t, a in curves.items()])
    return rank_trials(trials, history), history


def kinds(found) -> list[str]:
    return [d.kind for d in found]


def test_winner_still_improving_names_max_epochs():
    ranked, history = frames({"a": [0.3, 0.4, 0.5, 0.55, 0.6, 0.62, 0.64, 0.66, 0.68, 0.70], "b": [0.3] * 10})
    d = still_improving(ranked, history, 10)
    assert d and d.flag == "--max-epochs" and "raise --max-epochs" in d.message and "trial a" in d.message
    ranked, history = frames({"a": [0.3, 0.5, 0.7, 0.69] + [0.68] * 6})  # peaked at epoch 3
    assert still_improving(ranked, history, 10) is None
    ranked, history = frames({"a": [0.3, 0.4, 0.5]})  # stopped early by the trainer: not the budget's fault
    assert still_improving(ranked, history, 10) is None


def test_stops_within_noise_of_the_majority_rate_name_grace_period():
    """A 10-epoch benchmark run: trials stopped at epoch 1 while everyone sat at 0.208-0.217."""
    curves = {f"s{i}": [MAJORITY + 0.003 * (i % 3 - 1)] for i in range(6)}
    curves.update({f"k{i}": [MAJORITY + 0.004 * (i - 1)] + [0.5] * 9 for i in range(3)})
    ranked, history = frames(curves, {f"s{i}": "stopped" for i in range(6)})
    d = noise_stops(ranked, history, META)
    assert d and d.flag == "--grace-period"
    assert d.message.startswith("6 trials (6 at epoch 1) were stopped") and "600 validation images" in d.message


def test_a_stop_on_val_loss_is_said_as_such_with_its_margin_never_as_noise():
    """A recorded run: a trial the scheduler stopped at epoch 5 on val_loss (its val_acc tied at the
    majority rate) was reported as stopped where it "could not be told apart". The log says which
    metric decided: the diagnosis names val_loss and the margins, and no noise-stop is left."""
    curves = {"s0": [MAJORITY] * 5, **{f"k{i}": [MAJORITY + 0.002 * (i - 1)] * 5 + [0.5] * 5 for i in range(3)}}
    ranked, history = frames(curves, {"s0": "stopped"})
    assert noise_stops(ranked, history, META) is not None  # re-judged without the log: looks like noise
    decisions = [Decision.from_json({"trial_id": "s0", "rung": 5, "reason": "loss", "metric": "val_loss",
                                     "action": "STOP", "value": MAJORITY, "cutoff": MAJORITY, "loss": 1.93,
                                     "loss_cutoff": 1.80, "loss_margin": 0.0693, "asha_would_stop": False})]
    found = diagnose(ranked, history, META, decisions=decisions)
    assert "noise-stop" not in kinds(found) and "loss-stop" in kinds(found)
    d = loss_stops(decisions)
    assert d.flag is None and d.message.startswith("1 trial (1 at epoch 5) was stopped on val_loss")
    assert "val_loss 1.9300" in d.message and "cutoff loss 1.8000" in d.message and "margin 0.0693" in d.message
    assert not any("could not be" in f.message for f in found)


def test_the_noise_inputs_come_from_fersearch_json_and_older_folders_fall_back():
    """The search records n_val, majority and z once (noise.noise_inputs into fersearch.json's "noise");
    the diagnoses read that block; a folder without it falls back to the data block's counts."""
    import numpy as np

    from fersearch.results.noise import noise_inputs
    from fersearch.results.record import Noise

    labels = np.array([3] * 150 + [0] * 100 + [2] * 100 + [4] * 100 + [5] * 80 + [6] * 50 + [1] * 20 + [-1] * 7)
    recorded = noise_inputs(labels)
    assert recorded == Noise(n_val=600, majority=0.25, z=2.0)
    assert record_from_json({"data": {"counts": {"val": {**VAL, "unlabeled": 7}}}}).noise == recorded  # older folder
    noisy = record_from_json({"noise": {"n_val": 60, "majority": 0.5, "z": 3.0}, **RAW})
    assert noisy.noise == Noise(n_val=60, majority=0.5, z=3.0)
    curves = {f"s{i}": [MAJORITY + 0.003 * (i % 3 - 1)] for i in range(6)}
    curves.update({f"k{i}": [MAJORITY + 0.004 * (i - 1)] + [0.5] * 9 for i in range(3)})
    ranked, history = frames(curves, {f"s{i}": "stopped" for i in range(6)})
    d = noise_stops(ranked, history, record_from_json({**RAW, "noise": {"n_val": 60, "majority": 0.25, "z": 2.0}}))
    assert d and "60 validation images" in d.message  # the recorded block wins over the counts


def test_a_clearly_worse_stop_is_not_a_noise_stop():
    curves = {"low": [0.25, 0.26, 0.25], **{f"k{i}": [0.4, 0.5, 0.45 + 0.05 * i] + [0.6] * 7 for i in range(4)}}
    ranked, history = frames(curves, {"low": "stopped"})
    assert noise_stops(ranked, history, META) is None  # 0.25 at epoch 3 against 0.45-0.60: clearly below
    assert noise_stops(ranked, history, record_from_json({"max_epochs": 10})) is None  # no counts: no judgement


def test_decisions_held_on_noise_name_grace_period_and_the_rung():
    raw = [
        {"trial_id": "a", "rung": 1, "reason": "majority", "asha_would_stop": True, "action": "CONTINUE"},
        {"trial_id": "b", "rung": 1, "reason": "flat", "asha_would_stop": True, "action": "CONTINUE"},
        {"trial_id": "c", "rung": 1, "reason": "above", "asha_would_stop": False, "action": "CONTINUE"},
        {"trial_id": "d", "rung": 3, "reason": "stop", "asha_would_stop": True, "action": "STOP"},
    ]
    decisions = [Decision.from_json(d) for d in raw]
    d = held_rungs(decisions)
    assert d and d.flag == "--grace-period"
    assert "2 trials (2 at epoch 1)" in d.message and "raise --grace-period above 1" in d.message
    assert held_rungs(decisions[2:]) is None
    assert held_rungs(decisions, first_rung=1).flag == "--grace-period"
    # Held only past the first rung (the demo's rung at 15 of grace 5): learners tied there, no flag to raise.
    later = [Decision.from_json({**d, "rung": 15}) for d in raw]
    d = held_rungs(later, first_rung=5)
    assert d and d.flag is None and "--grace-period" not in d.message and "past the first rung (epoch 5)" in d.message


def test_boundary_and_seed_comparison():
    ranked, history = frames({"win": [0.5, 0.6, 0.58], "seed": [0.3, 0.4, 0.42]})
    edge = Boundary("lr", 0.01, 1e-4, 0.01, "declared", "high")
    found = diagnose(ranked, history, META, boundaries=[edge], seed_trial="seed")
    assert kinds(found) == ["boundary", "seed"]
    assert found[0].flag == "--space" and "lr = 0.01 sits at the high end" in found[0].message
    assert "reached val_acc 0.4200" in found[1].message and "winner (trial win) 0.6000" in found[1].message
    assert "+18.0 points" in found[1].message
    assert "won" in seed_comparison(ranked, "win").message and seed_comparison(ranked, "win").flag == "--trials"
    assert "not among the trials" in seed_comparison(ranked, None).message


def test_a_clean_search_says_only_the_seed_line():
    ranked, history = frames({"a": [0.3, 0.6, 0.7, 0.68] + [0.66] * 6, "b": [0.3, 0.5, 0.52, 0.5] + [0.5] * 6})
    assert kinds(diagnose(ranked, history, META, decisions=[], seed_trial=None)) == ["seed"]


def test_the_warm_start_seed_point_counts_as_the_seed_configuration():
    """wide.py's first point is the seed CNN with weight_decay at the log range's floor (1e-6, as 0 cannot
    be drawn): the report must still show it as the seed baseline, and a real difference must not be."""
    import pandas as pd

    from fersearch.config import TrainConfig
    from fersearch.report.analysis import find_seed_trial

    def rows(**changes):
        return pd.DataFrame([{"trial_id": "t1", "config_json": TrainConfig(lr=3e-3).to_json()},
                             {"trial_id": "t2", "config_json": TrainConfig(**changes).to_json()}])

    assert find_seed_trial(rows(weight_decay=1e-6)) == "t2"
    assert find_seed_trial(rows(weight_decay=1e-4)) is None


def test_a_tied_top_still_improving_at_the_end_says_the_budget_is_too_short_and_by_how_much():
    """The two best trials end at 0.66 and 0.65, still rising at epoch 10, and agree on most of
    the 600 validation images: a tie the budget cannot break. Said instead of still-improving, naming both
    trials and twice the budget; a clear lead, or a tie whose trials had peaked, says nothing of it."""
    import numpy as np

    from fersearch import paired
    from fersearch.report.ties import find_ties

    rising = [0.3, 0.4, 0.5, 0.55, 0.6, 0.62, 0.63, 0.64, 0.645]
    ranked, history = frames({"a": [*rising, 0.66], "b": [*rising, 0.65], "c": [0.3] * 10})
    i = np.arange(600)
    b_right = (i < 380) | ((i >= 396) & (i < 406))  # 390 right; 16 only a gets, 10 only b: SE 0.0085, diff 0.01
    per_image = {"a": {10: paired.encode(i < 396, None)}, "b": {10: paired.encode(b_right, None)},
                 "c": {1: paired.encode(i < 180, None)}}
    ties = find_ties(ranked, per_image, 2.0)
    assert ties.ids == ["a", "b"] and [t.tied for t in ties.compared] == [True, False]
    found = diagnose(ranked, history, META, ties=ties)
    assert "too-short" in kinds(found) and "still-improving" not in kinds(found)
    d = next(d for d in found if d.kind == "too-short")
    assert d.flag == "--max-epochs" and "(a, b)" in d.message and "from 10 to about 20" in d.message
    per_image["b"] = {10: paired.encode(i < 390, None)}  # the same 0.65, but a subset of a's images: not a tie
    assert "too-short" not in kinds(diagnose(ranked, history, META, ties=find_ties(ranked, per_image, 2.0)))
    ranked, history = frames({"a": [0.3, 0.66] + [0.6] * 8, "b": [0.3, 0.65] + [0.6] * 8})  # peaked at epoch 2
    per_image = {"a": {2: paired.encode(i < 396, None)}, "b": {2: paired.encode(b_right, None)}}
    assert "too-short" not in kinds(diagnose(ranked, history, META, ties=find_ties(ranked, per_image, 2.0)))
