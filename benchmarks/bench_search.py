"""Does the default search beat a person's one-line change? Issue 10's benchmark; prints JSON.

On the default synthetic data and the hard preset, for each of N seeds, at the same
budget (--trials, --max-epochs):
  default            `fersearch tune` as shipped (wide space with its warm start, TPE, ASHA)
  random_asha        --sampler random (ASHA)
  random_fifo        --sampler random --scheduler fifo: the same configurations as
                     random_asha (the seeded random sampler draws the same sequence), every
                     one trained to the end, so ASHA's loss can be measured
  seed               the seed configuration alone, trained --max-epochs
  seed+<lever>       the seed with one lever changed: normalize=standardize, batch_norm,
                     optimizer sgd (lr 0.01), augmentation (hflip, shift 4)
For each line: mean and std over seeds of the best val_acc, of the test accuracy of the
winner retrained from scratch (for a single configuration: its own run, best epoch
restored), epochs trained and wall time; then issue 10's targets, checked.

    python benchmarks/bench_search.py                          # 2 data sets x 3 seeds: hours on 2 cores
    python benchmarks/bench_search.py --presets hard --seeds 0 # one seed of one data set
    python benchmarks/bench_search.py --quick                  # tiny data, 4 trials x 2 epochs, 1 seed: < 1 min

Searches run in one local Ray (every CPU); single configurations train with one thread.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SEARCHES = {"default": {}, "random_asha": {"sampler": "random"},
            "random_fifo": {"sampler": "random", "scheduler": "fifo"}}
SINGLES = {"seed": {}, "seed+standardize": {"normalize": "standardize"}, "seed+batch_norm": {"batch_norm": True},
           "seed+sgd": {"optimizer": "sgd", "lr": 0.01}, "seed+augment": {"hflip": True, "shift": 4}}
QUICK = {"presets": ["hard"], "seeds": [0], "trials": 4, "max_epochs": 2, "n": 300}


def fit_and_test(cfg: Any, fer: Any) -> tuple[Any, float]:
    """Train `cfg` (one thread), the best epoch restored; (fit result, test accuracy)."""
    from fersearch.report.evaluate import split_with_labels
    from fersearch.train import fit
    from fersearch.train.predict import score

    result = fit(cfg, fer, threads=1)
    images, labels = split_with_labels(fer, "test")
    return result, float(score(result.model, images, labels)["acc"])


def run_search(line: str, fer: Any, seed: int, trials: int, max_epochs: int, root: Path) -> dict[str, Any]:
    from fersearch.report.best import best
    from fersearch.search.driver import tune

    t0 = time.time()
    result = tune(trials=trials, max_epochs=max_epochs, seed=seed, data=fer, results=root,
                  name=f"{line}-{seed}", verbose=False, **SEARCHES[line])
    wall = time.time() - t0
    winner = best(result.path)
    _, test = fit_and_test(winner.config.replace(epochs=max_epochs, seed=seed), fer)
    t = result.trials
    return {"best_val_acc": float(winner.best_val_acc), "test_acc": test, "epochs": int(t["epochs"].sum()),
            "wall_s": round(wall, 1), "stopped": int((t["status"] == "stopped").sum()), "winner": winner.trial_id}


def run_single(line: str, fer: Any, seed: int, max_epochs: int) -> dict[str, Any]:
    from fersearch.config import TrainConfig

    t0 = time.time()
    cfg = TrainConfig.from_dict({**SINGLES[line], "epochs": max_epochs, "seed": seed})
    result, test = fit_and_test(cfg, fer)
    return {"best_val_acc": float(result.best_val_acc), "test_acc": test, "epochs": len(result.history),
            "wall_s": round(time.time() - t0, 1)}


def stats(runs: list[dict[str, Any]]) -> dict[str, Any]:
    import numpy as np

    out: dict[str, Any] = {"n": len(runs)}
    for key in ("best_val_acc", "test_acc", "epochs", "wall_s"):
        v = np.array([r[key] for r in runs], dtype=float)
        out[key] = {"mean": round(float(v.mean()), 4), "std": round(float(v.std(ddof=1)) if len(v) > 1 else 0.0, 4)}
    return out


def targets(per_seed: dict[str, dict[str, list[dict[str, Any]]]]) -> dict[str, Any]:
    """Issue 10's targets on these runs (per data set)."""
    import numpy as np

    out: dict[str, Any] = {}
    for preset, lines in per_seed.items():
        mean = {k: float(np.mean([r["test_acc"] for r in v])) for k, v in lines.items()}
        levers = {k: v for k, v in mean.items() if k.startswith("seed+")}
        best_lever = max(levers, key=levers.get) if levers else None
        t: dict[str, Any] = {}
        if "default" in mean and best_lever:
            t["default_test_vs_best_lever"] = {
                "default": round(mean["default"], 4), best_lever: round(levers[best_lever], 4),
                "points": round(100 * (mean["default"] - levers[best_lever]), 1)}
        if "random_asha" in lines and "random_fifo" in lines:
            pairs = list(zip(lines["random_asha"], lines["random_fifo"]))
            kept = sum(abs(a["best_val_acc"] - f["best_val_acc"]) <= 0.01 or a["best_val_acc"] > f["best_val_acc"]
                       for a, f in pairs)
            share = sum(a["epochs"] for a, _ in pairs) / max(1, sum(f["epochs"] for _, f in pairs))
            t["asha_keeps_fifo_winner"] = {"seeds": f"{kept} of {len(pairs)}", "epochs_share": round(share, 3)}
        if "default" in lines and "random_asha" in lines:
            val = {k: float(np.mean([r["best_val_acc"] for r in lines[k]])) for k in ("default", "random_asha")}
            t["tpe_vs_random_best_val_acc"] = {k: round(v, 4) for k, v in val.items()}
        out[preset] = t
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    import ray

    from fersearch.data.synth import synthetic_data

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", nargs="+", default=["default", "hard"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--trials", type=int, default=16)
    ap.add_argument("--max-epochs", type=int, default=10)
    ap.add_argument("--n", type=int, default=4000, help="synthetic faces per data set")
    ap.add_argument("--lines", nargs="+", default=[*SEARCHES, *SINGLES], choices=[*SEARCHES, *SINGLES])
    ap.add_argument("--quick", action="store_true", help="tiny data, 4 trials x 2 epochs, 1 seed, hard preset")
    ap.add_argument("--out", help="also write the JSON here")
    args = ap.parse_args(argv)
    if args.quick:
        vars(args).update(QUICK)
    per_seed: dict[str, dict[str, list[dict[str, Any]]]] = {}
    t0 = time.time()
    started = not ray.is_initialized()  # one Ray for every search (tune() reuses it)
    if started:
        ray.init(address="local", include_dashboard=False, logging_level="WARNING")
    try:
        with tempfile.TemporaryDirectory(prefix="bench_search-") as tmp:
            for preset in args.presets:
                fer = synthetic_data(args.n, 0, preset)
                for line in args.lines:
                    for seed in args.seeds:
                        run = (run_search(line, fer, seed, args.trials, args.max_epochs, Path(tmp) / preset)
                               if line in SEARCHES else run_single(line, fer, seed, args.max_epochs))
                        per_seed.setdefault(preset, {}).setdefault(line, []).append({"seed": seed, **run})
                        print(f"{preset} {line} seed {seed}: {json.dumps(run)}", file=sys.stderr)
    finally:
        if started:
            ray.shutdown()
    out = {"machine": {"host": platform.node(), "cpus": os.cpu_count(), "processor": platform.processor()},
           "args": vars(args), "total_s": round(time.time() - t0, 1),
           "results": {p: {k: stats(v) for k, v in lines.items()} for p, lines in per_seed.items()},
           "targets": targets(per_seed), "runs": per_seed}
    text = json.dumps(out, indent=2)
    if args.out:
        Path(args.out).write_text(text)
    print(text)
    return out


if __name__ == "__main__":
    main()
