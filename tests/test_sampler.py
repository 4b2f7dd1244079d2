"""The mix sampler (search/sampler.py), driven as Ray's OptunaSearch drives it: `study.ask()`, then the
space's define-by-run function on the trial; no Ray, no training (a made-up score)."""

from __future__ import annotations

import math

import numpy as np
import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from fersearch.search.sampler import SOURCES, MixSampler, mutate, shares
from fersearch.search.spaces import load_space, quiet_optuna
from fersearch.search.study import make_sampler


def score(params: dict) -> float:
    """Standardisation and an lr near 4e-4 score best; smooth elsewhere (a landscape with a neighbourhood)."""
    lr = params.get("lr", 1e-3)
    return 0.5 + 0.1 * (params.get("normalize") == "standardize") - 0.05 * abs(math.log10(lr) + 3.4) \
        - 0.001 * abs(params.get("dense", 512) - 512) / 64


def run_study(space_name: str, seed: int, trials: int, concurrent: int = 1, fail_every: int = 0) -> optuna.Study:
    """`trials` asked `concurrent` at a time (the others RUNNING meanwhile, as under Ray), recipes enqueued first."""
    space = load_space(space_name)
    study = optuna.create_study(direction="maximize", sampler=make_sampler("mix", seed, trials, space.fn))
    for point in space.points:
        study.enqueue_trial(point)
    asked = 0
    while asked < trials:
        batch = []
        for _ in range(min(concurrent, trials - asked)):
            trial = study.ask()
            space.fn(trial)
            batch.append(trial)
            asked += 1
        for trial in batch:
            if fail_every and trial.number % fail_every == fail_every - 1:
                study.tell(trial, state=TrialState.FAIL)
            else:
                trial.report(score(trial.params) - 0.05, 1)
                study.tell(trial, score(trial.params))
    return study


def configs(study: optuna.Study) -> list[tuple]:
    return [tuple(sorted(t.params.items())) for t in study.trials]


@pytest.fixture(autouse=True)
def _quiet():
    with quiet_optuna():
        yield


def test_same_seed_same_proposals_and_sources_other_seed_others():
    a, b, c = run_study("wide", 0, 14), run_study("wide", 0, 14), run_study("wide", 1, 14)
    assert configs(a) == configs(b)
    assert [t.user_attrs for t in a.trials] == [t.user_attrs for t in b.trials]
    assert configs(a)[5:] != configs(c)[5:]  # the recipes are the same, the rest not


def test_every_trial_records_its_source_recipes_first_and_parents_for_moves():
    study = run_study("wide", 0, 20)
    sources = [t.user_attrs["source"] for t in study.trials]
    assert sources[:5] == ["recipe"] * 5 and set(sources) <= set(SOURCES)
    assert {"incumbent", "prior"} <= set(sources[5:])  # both neighbourhoods used at this budget
    for t in study.trials:
        if t.user_attrs["source"] in ("incumbent", "prior"):
            parent = study.trials[t.user_attrs["parent"]]
            assert parent.number < t.number and parent.state == TrialState.COMPLETE
        if t.user_attrs["source"] == "prior":
            assert study.trials[t.user_attrs["parent"]].user_attrs["source"] == "recipe"


@pytest.mark.parametrize("space_name,trials,concurrent", [("seed", 40, 1), ("seed", 30, 3), ("wide", 30, 4)])
def test_no_configuration_is_proposed_twice_running_trials_included(space_name, trials, concurrent):
    study = run_study(space_name, 0, trials, concurrent=concurrent)
    assert len(set(configs(study))) == len(study.trials) == trials


def test_an_incumbent_proposal_moves_one_to_three_parameters_of_the_best_trial_so_far():
    study = run_study("wide", 0, 24)
    moves = [t for t in study.trials if t.user_attrs["source"] == "incumbent"]
    assert moves
    for t in moves:
        parent = study.trials[t.user_attrs["parent"]]
        earlier = [u for u in study.trials[:t.number] if u.state == TrialState.COMPLETE]
        assert parent.value >= sorted(u.value for u in earlier)[-2]  # the best, or the next while it has 2 running
        changed = {k for k in t.params if parent.params.get(k) != t.params[k]}
        added_or_dropped = set(t.params) ^ set(parent.params)
        assert 1 <= len(changed - added_or_dropped) + ("blocks" in changed) <= 3, (parent.params, t.params)


def test_failed_and_diverged_trials_are_never_the_incumbent():
    study = run_study("wide", 0, 18, fail_every=3)
    failed = {t.number for t in study.trials if t.state == TrialState.FAIL}
    assert failed and all(t.user_attrs.get("parent") not in failed for t in study.trials
                          if t.user_attrs["source"] == "incumbent")


def test_a_running_trial_counts_as_incumbent_by_its_intermediate_values():
    space = load_space("seed")
    study = optuna.create_study(direction="maximize", sampler=MixSampler(space.fn, seed=0, trials=10))
    study.enqueue_trial(space.points[0])
    first = study.ask()
    space.fn(first)
    first.report(0.9, 1)  # still running, best so far
    later = []
    for _ in range(6):
        t = study.ask()
        space.fn(t)
        later.append(t)
    parents = [t.user_attrs.get("parent") for t in later if t.user_attrs["source"] == "incumbent"]
    assert parents and set(parents) == {first.number}


def test_mutations_stay_in_bounds_move_at_least_one_step_and_stay_near():
    rng = np.random.default_rng(0)
    lr = FloatDistribution(1e-4, 1e-2, log=True)
    dropout = FloatDistribution(0.0, 0.5, step=0.05)
    dense = IntDistribution(128, 1024, log=True)
    shift = IntDistribution(0, 4)
    filters = CategoricalDistribution((32, 48, 64, 96, 128))
    flag = CategoricalDistribution((False, True))
    for _ in range(300):
        new = mutate(1e-3, lr, rng, 0.2)
        assert lr.low <= new <= lr.high and new != 1e-3 and abs(math.log(new / 1e-3)) < 5 * 0.2 * math.log(100)
        d = mutate(0.25, dropout, rng, 0.2)
        assert dropout._contains(d) and d != 0.25 and abs(round(d / 0.05) - d / 0.05) < 1e-9
        w = mutate(512, dense, rng, 0.2)
        assert isinstance(w, int) and 128 <= w <= 1024 and w != 512
        s = mutate(0, shift, rng, 0.2)
        assert isinstance(s, int) and 1 <= s <= 4
        f = mutate(64, filters, rng, 0.2)
        assert f in (48, 96)  # a neighbouring choice
        assert mutate(False, flag, rng, 0.2) is True
    assert mutate(1e-2, lr, rng, 0.2) < 1e-2 and mutate(0.5, dropout, rng, 0.2) < 0.5  # off a bound, inward


def test_shares_move_from_the_prior_to_the_incumbent():
    start, end = shares(0.0), shares(1.0)
    assert all(math.isclose(sum(s.values()), 1.0) for s in (start, end, shares(0.5)))
    assert start["prior"] > end["prior"] == 0.0 and end["incumbent"] > start["incumbent"]


def test_the_sampler_pickles_mid_search_and_carries_on_alike():
    """Ray pickles the searcher (sampler inside) into its state; --resume unpickles it."""
    import pickle

    space = load_space("wide")
    sampler = make_sampler("mix", 0, 12, space.fn)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    for point in space.points:
        study.enqueue_trial(point)
    for _ in range(7):
        t = study.ask()
        space.fn(t)
        study.tell(t, score(t.params))
    copy = pickle.loads(pickle.dumps(sampler))
    assert type(copy) is MixSampler and copy._space.source == space.fn.source


@pytest.mark.slow
def test_a_real_search_with_the_default_sampler_says_each_trials_source(tuned_experiment):
    """`fersearch tune` as shipped (the mix sampler): trials.csv's source column and the study's user attrs agree."""
    import pandas as pd

    from fersearch.search.study import load_study

    trials = pd.read_csv(tuned_experiment / "trials.csv", dtype={"trial_id": str})
    study = load_study(tuned_experiment)
    by_ray_id = {t.user_attrs["ray_trial_id"]: t.user_attrs["source"] for t in study.trials}
    assert len(trials) == len(study.trials) == 6 and set(trials["source"]) <= set(SOURCES)
    assert dict(zip(trials["trial_id"], trials["source"])) == by_ray_id
    assert len(set(configs(study))) == 6


@pytest.mark.slow
def test_best_and_the_report_page_say_where_the_configurations_came_from(tuned_experiment, evaluated_experiment):
    import pandas as pd
    from typer.testing import CliRunner

    from fersearch.cli import app

    res = CliRunner().invoke(app, ["best", str(tuned_experiment)])
    assert res.exit_code == 0, res.output
    trials = pd.read_csv(tuned_experiment / "trials.csv")
    said = next(line for line in res.output.splitlines() if line.startswith("  proposals: "))
    assert sorted(said[len("  proposals: "):].split(", ")) == sorted(
        f"{n} {s}" for s, n in trials["source"].value_counts().items())
    assert "; proposed as " in res.output and " source " in res.output.split("top ")[1].splitlines()[1]
    for page in ("report.md", "report.html"):
        assert "Where the configurations came from" in (evaluated_experiment / "best" / page).read_text()
