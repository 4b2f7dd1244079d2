"""Does TPE propose better trials when ASHA-stopped trials are told PRUNED, or COMPLETE at their best value?

A cheap synthetic objective with learning curves (a trial's val_acc rises towards a
final value that depends on lr and width, some configurations learn slowly), the same
successive-halving rule in both arms (stop a trial at a rung when it is below the median of the
trials seen at that rung: the scheduler's decisions depend only on the curves, never on the tell),
and fersearch's TPE settings (multivariate, constant liar, startup_trials). Arm "complete": a
stopped trial is told COMPLETE with its best value so far (what Ray's OptunaSearch does). Arm
"pruned": told PRUNED after its per-epoch intermediate values (Optuna's convention; TPE ranks
pruned trials by how far they got, then by their last value).

    .venv/bin/python benchmarks/bench_pruned.py [--seeds 30] [--trials 30]

Figures: mean over seeds of the true final accuracy of the proposals after the start-up trials,
and of the best final accuracy found.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from pathlib import Path

import numpy as np
import optuna

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fersearch.search.study import make_sampler  # noqa: E402

MAX_EPOCHS, RUNGS = 30, (5, 15)
FIRST: dict[int, list[float]] = {}


def final_acc(lr: float, width: float) -> float:
    """A ridge in log-lr that moves with width (what multivariate TPE can learn), peak 0.65."""
    best_lr = -2.8 - 0.8 * (width - 0.5)
    return 0.2 + 0.45 * math.exp(-((math.log10(lr) - best_lr) ** 2) / 0.35)


def curve(lr: float, width: float, rng: np.random.Generator) -> list[float]:
    tau = 2 + 10 * width  # wide nets learn slower: a stop at an early rung judges them too soon
    f = final_acc(lr, width)
    return [float(f * (1 - math.exp(-e / tau)) + rng.normal(0, 0.01)) for e in range(1, MAX_EPOCHS + 1)]


def run(seed: int, trials: int, arm: str) -> tuple[float, float]:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=make_sampler("tpe", seed, trials))
    rng = np.random.default_rng(seed)
    seen: dict[int, list[float]] = {r: [] for r in RUNGS}
    finals = []
    for _ in range(trials):
        t = study.ask()
        lr, width = t.suggest_float("lr", 1e-5, 1e-1, log=True), t.suggest_float("width", 0.0, 1.0)
        acc = curve(lr, width, rng)
        best, stopped = -1.0, False
        for e, a in enumerate(acc, 1):
            best = max(best, a)
            t.report(best, e)
            if e in RUNGS:
                seen[e].append(best)
                if best < statistics.median(seen[e]):
                    stopped = True
                    break
        finals.append(final_acc(lr, width))
        if stopped and arm == "pruned":
            study.tell(t, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(t, best)
    start = make_sampler("tpe", seed, trials)._n_startup_trials
    differ = sum(a != b for a, b in zip(finals, FIRST.setdefault(seed, finals)))  # proposals unlike the first arm's
    n_stopped = sum(t.state == optuna.trial.TrialState.PRUNED or len(t.intermediate_values) < MAX_EPOCHS
                    for t in study.trials)
    return float(np.mean(finals[start:])), max(finals), n_stopped, differ


DIVERGE_LR = 0.02  # above it a trial's loss goes non-finite at epoch 2 (fersearch ends it: status diverged)


def run_diverged(seed: int, trials: int, arm: str) -> tuple[float, float]:
    """Diverged trials told COMPLETE at 0.0 (as fersearch once did) or FAIL: share of proposals after the start-up
    that diverge, and their mean true final accuracy (a diverged one counts 0)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=make_sampler("tpe", seed, trials))
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(trials):
        t = study.ask()
        lr, width = t.suggest_float("lr", 1e-5, 1e-1, log=True), t.suggest_float("width", 0.0, 1.0)
        if lr > DIVERGE_LR:
            t.report(0.0, 1)
            out.append((1.0, 0.0))
            study.tell(t, state=optuna.trial.TrialState.FAIL) if arm == "fail" else study.tell(t, 0.0)
            continue
        study.tell(t, max(curve(lr, width, rng)))
        out.append((0.0, final_acc(lr, width)))
    start = make_sampler("tpe", seed, trials)._n_startup_trials
    diverged, acc = np.array(out[start:]).T
    return float(diverged.mean()), float(acc.mean())


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seeds", type=int, default=30)
    p.add_argument("--trials", type=int, default=30)
    a = p.parse_args()
    for arm in ("complete-0", "fail"):
        div, acc = np.array([run_diverged(s, a.trials, arm) for s in range(a.seeds)]).T
        print(f"diverged told {arm:10s}: proposals after start-up that diverge {div.mean():.3f}; their mean true "
              f"final acc {acc.mean():.4f} (sd over seeds {acc.std():.4f})  [{a.seeds} seeds x {a.trials} trials]")
    for arm in ("complete", "pruned"):
        got = [run(s, a.trials, arm) for s in range(a.seeds)]
        mean, best, stopped, differ = np.array(got).T
        print(f"{arm:9s} proposals after start-up: mean true final acc {mean.mean():.4f} (sd {mean.std():.4f}); "
              f"best found {best.mean():.4f} (sd {best.std():.4f}); stopped {stopped.mean():.1f} of {a.trials}; "
              f"proposals unlike the complete arm's {differ.mean():.1f}  [{a.seeds} seeds x {a.trials} trials]")


if __name__ == "__main__":
    main()
