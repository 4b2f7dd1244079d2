"""Does the default search beat a person's best guess at the budget users run? Prints JSON.

On the default synthetic data and the hard preset, for each of N seeds, at the same
budget (--trials, --max-epochs; issue 21: 16 x 30):
  default            `fersearch tune` as shipped (wide space with its warm start, TPE, the
                     paired noise-aware ASHA)
  random_fifo        --sampler random --scheduler fifo: every configuration trained to the end
                     (its curves, with each epoch's per-image validation records, go to
                     --curves for benchmarks/replay_rungs.py to replay through the stop rules)
  random_asha        --sampler random (ASHA): the same configurations as random_fifo (the seeded
                     random sampler draws the same sequence); off unless named in --lines
  seed+<lever>       the seed CNN with one lever changed, trained alone for --max-epochs:
                     normalize=standardize, batch_norm, optimizer sgd (lr 0.01), augmentation
  point:<name>       each warm-start point of the wide space (seed, std, bn-std, sgd-cosine,
                     augment) trained alone for --max-epochs
For each line: mean and std over seeds of the best val_acc, of the test accuracy of the
winner retrained from scratch (for a single configuration: its own run, best epoch
restored), epochs trained (and as a share of trials x max epochs) and wall time; then issue
21's targets, checked: the default search's retrained test accuracy against the best
warm-start point and the best lever alone, and its share of the epochs.

    python benchmarks/bench_search.py                          # 2 data sets x 3 seeds: hours on 2 cores
    python benchmarks/bench_search.py --presets hard --seeds 0 # one seed of one data set
    python benchmarks/bench_search.py --quick                  # tiny data, 4 trials x 2 epochs, 1 seed: < 1 min
    python benchmarks/bench_search.py --log runs.jsonl         # cut short? run it again: finished runs are kept
    python benchmarks/bench_search.py --keep DIR               # keep every search's folder (ties: report/ties.py)

Searches run one after another in one local Ray (every CPU), so their wall times compare;
then the single configurations and the winners' retrains (one thread each) run as Ray
tasks, as many at once as there are CPUs.
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

SEARCHES = {"default": {}, "random_fifo": {"sampler": "random", "scheduler": "fifo"},
            "random_asha": {"sampler": "random"}}
LEVERS = {"seed+standardize": {"normalize": "standardize"}, "seed+batch_norm": {"batch_norm": True},
          "seed+sgd": {"optimizer": "sgd", "lr": 0.01}, "seed+augment": {"hflip": True, "shift": 4}}
POINT_NAMES = ("seed", "std", "bn-std", "sgd-cosine", "augment")  # the wide space's `points`, in order


def warm_start_points() -> dict[str, dict[str, Any]]:
    """The default space's warm-start points as single lines, "point:<name>"."""
    from fersearch.search.spaces import load_space

    points = load_space().points
    assert len(points) == len(POINT_NAMES), "search_spaces/wide.py's points changed: update POINT_NAMES"
    return {f"point:{name}": dict(p) for name, p in zip(POINT_NAMES, points)}


SINGLES = {**LEVERS, **warm_start_points()}
LINES = ["default", "random_fifo", *SINGLES]
QUICK = {"presets": ["hard"], "seeds": [0], "trials": 4, "max_epochs": 2, "n": 300,
         "lines": ["default", "random_fifo", "seed+standardize", "point:std"]}


def fit_and_test(cfg: Any, fer: Any) -> dict[str, Any]:
    """Train `cfg` (one thread), the best epoch restored: its best val_acc, test accuracy, epochs, wall time."""
    from fersearch.report.evaluate import split_with_labels
    from fersearch.train import fit
    from fersearch.train.predict import score

    t0 = time.time()
    result = fit(cfg, fer, threads=1)
    images, labels = split_with_labels(fer, "test")
    return {"best_val_acc": float(result.best_val_acc), "test_acc": float(score(result.model, images, labels)["acc"]),
            "epochs": len(result.history), "wall_s": round(time.time() - t0, 1)}


def run_search(line: str, fer: Any, seed: int, trials: int, max_epochs: int, root: Path) -> dict[str, Any]:
    """One search, alone on the machine (its wall time is the line's); the winner's retrain is left to `trainings`."""
    from fersearch.report.best import best
    from fersearch.search.driver import tune

    t0 = time.time()
    result = tune(trials=trials, max_epochs=max_epochs, seed=seed, data=fer, results=root,
                  name=f"{line}-{seed}", verbose=False, **SEARCHES[line])
    wall = time.time() - t0
    winner = best(result.path)
    t = result.trials
    return {"best_val_acc": float(winner.best_val_acc), "epochs": int(t["epochs"].sum()), "wall_s": round(wall, 1),
            "stopped": int((t["status"] == "stopped").sum()), "winner": winner.trial_id, "folder": str(result.path),
            "retrain": winner.config.replace(epochs=max_epochs, seed=seed)}


def search_curves(folder: str | Path) -> list[dict[str, Any]]:
    """Every trial's curves in sampling order (val_acc, val_loss and the per-image records per epoch):
    what replay_rungs.py replays."""
    from fersearch import paired
    from fersearch.search.experiment import read_history, read_per_image, read_trials

    history, images = read_history(folder), read_per_image(folder)
    curves = []
    for trial_id in read_trials(folder)["trial_id"]:
        h = history[history["trial_id"] == trial_id].sort_values("epoch")
        recs = images.get(trial_id, {})
        curves.append({"trial_id": trial_id, "val_acc": h["val_acc"].tolist(), "val_loss": h["val_loss"].tolist(),
                       **{k: [recs.get(int(e), {}).get(k) for e in h["epoch"]]
                          for k in (paired.CORRECT_KEY, paired.LOSSES_KEY)}})
    return curves


def trainings(jobs: dict[str, Any], fer: Any) -> dict[str, dict[str, Any]]:
    """Train every (name -> TrainConfig) job as a one-CPU Ray task, as many at once as there are CPUs."""
    import ray

    task = ray.remote(num_cpus=1)(fit_and_test)
    ref = ray.put(fer)
    futures = {name: task.remote(cfg, ref) for name, cfg in jobs.items()}
    return {name: ray.get(f) for name, f in futures.items()}


def run_seed(preset: str, fer: Any, seed: int, lines: list[str], args: Any, root: Path,
             done: dict[str, dict[str, Any]], record: Any) -> None:
    """Every line of one (data set, seed) not already in `done`: searches one after another, then the
    single configurations and the search winners' retrains, in parallel."""
    from fersearch.config import TrainConfig
    from fersearch.search.experiment import read_meta
    from fersearch.search.noise import read_noise

    pending: dict[str, dict[str, Any]] = {}
    for line in (x for x in lines if x in SEARCHES and x not in done):
        pending[line] = run_search(line, fer, seed, args.trials, args.max_epochs, root)
        if line == "random_fifo" and args.curves:  # for replay_rungs.py: the same curves through every rule
            with args.curves.open("a") as f:
                folder = pending[line]["folder"]
                f.write(json.dumps({"preset": preset, "seed": seed, "variant": "random", "max_epochs": args.max_epochs,
                                    "n": args.n, "noise": read_noise(read_meta(folder)),
                                    "curves": search_curves(folder)}) + "\n")
    jobs = {line: run.pop("retrain") for line, run in pending.items()}
    jobs.update({line: TrainConfig.from_dict({**SINGLES[line], "epochs": args.max_epochs, "seed": seed})
                 for line in lines if line in SINGLES and line not in done})
    for line, trained in trainings(jobs, fer).items():
        if line in pending:  # a search: its own figures, plus its winner's retrained test accuracy
            trained = {**pending[line], "test_acc": trained["test_acc"], "retrain_s": trained["wall_s"]}
        record({"preset": preset, "line": line, "seed": seed, **trained})


def stats(runs: list[dict[str, Any]]) -> dict[str, Any]:
    import numpy as np

    out: dict[str, Any] = {"n": len(runs)}
    for key in ("best_val_acc", "test_acc", "epochs", "wall_s"):
        v = np.array([r[key] for r in runs], dtype=float)
        out[key] = {"mean": round(float(v.mean()), 4), "std": round(float(v.std(ddof=1)) if len(v) > 1 else 0.0, 4)}
    return out


def targets(per_seed: dict[str, dict[str, list[dict[str, Any]]]], budget: int) -> dict[str, Any]:
    """Issue 21's targets on these runs (per data set): the default search's retrained test accuracy
    against the best warm-start point and the best lever trained alone (mean over seeds), and its
    epochs as a share of the budget (trials x max epochs)."""
    import numpy as np

    out: dict[str, Any] = {}
    for preset, lines in per_seed.items():
        mean = {k: float(np.mean([r["test_acc"] for r in v])) for k, v in lines.items()}
        t: dict[str, Any] = {}
        val = {k: float(np.mean([r["best_val_acc"] for r in v])) for k, v in lines.items()}
        for group, prefix in (("warm_start_point", "point:"), ("lever", "seed+")):
            alone = {k: v for k, v in mean.items() if k.startswith(prefix)}
            if "default" in mean and alone:
                # The best alone by its test accuracy (the reading: a bar raised by picking on test),
                # and the one a person would pick without the test split, by validation.
                top, by_val = max(alone, key=alone.get), max(alone, key=lambda k: val[k])
                points = round(100 * (mean["default"] - alone[top]), 1)
                t[f"default_test_vs_best_{group}"] = {
                    "default": round(mean["default"], 4), top: round(alone[top], 4), "points": points,
                    "target": ">= +2 points", "met": bool(points >= 2) if group == "warm_start_point" else None,
                    "best_by_val": by_val, "points_vs_best_by_val": round(100 * (mean["default"] - alone[by_val]), 1)}
        for line in ("default", "random_fifo", "random_asha"):
            if line in lines:
                share = float(np.mean([r["epochs"] for r in lines[line]])) / budget
                t[f"{line}_epochs_share"] = {"share": round(share, 3), **(
                    {"target": "<= 0.40", "met": bool(share <= 0.40)} if line == "default" else {})}
        if "random_fifo" in mean:
            t["default_vs_random_fifo_test"] = round(100 * (mean.get("default", float("nan")) - mean["random_fifo"]), 1)
        out[preset] = t
    return out


def run_all(args: Any, runs: list[dict[str, Any]], record: Any) -> None:
    """Every (seed, data set, line) not already in `runs`, in one local Ray."""
    import ray

    from fersearch.data.synth import synthetic_data

    started = not ray.is_initialized()  # one Ray for every search (tune() reuses it) and training
    if started:
        ray.init(address="local", include_dashboard=False, logging_level="WARNING")
    try:
        with tempfile.TemporaryDirectory(prefix="bench_search-") as tmp:
            root = Path(args.keep or tmp)
            data = {p: synthetic_data(args.n, 0, p) for p in args.presets}
            for seed in args.seeds:  # seed outermost: a run cut short still has whole seeds of both data sets
                for preset, fer in data.items():
                    done = {r["line"]: r for r in runs if (r["preset"], r["seed"]) == (preset, seed)}
                    run_seed(preset, fer, seed, args.lines, args, root / preset, done, record)
    finally:
        if started:
            ray.shutdown()


def read_log(path: Path | None, args: Any) -> list[dict[str, Any]]:
    """Runs already in the --log file at these settings; a torn last line (a run killed mid-append)
    is cut off first (fersearch.io.cut_torn_tail), so the next append starts a line of its own."""
    from fersearch.io import cut_torn_tail

    if path is None or not path.exists():
        return []
    cut_torn_tail(path)
    runs = [json.loads(text) for text in path.read_text().splitlines()]
    return [r for r in runs if (r["trials"], r["max_epochs"], r["n"]) == (args.trials, args.max_epochs, args.n)]


def main(argv: list[str] | None = None) -> dict[str, Any]:


    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", nargs="+", default=["default", "hard"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--trials", type=int, default=16)
    ap.add_argument("--max-epochs", type=int, default=30)
    ap.add_argument("--n", type=int, default=4000, help="synthetic faces per data set")
    ap.add_argument("--lines", nargs="+", default=LINES, choices=[*SEARCHES, *SINGLES])
    ap.add_argument("--curves", type=Path, help="append random_fifo's curves here (JSON lines) for replay_rungs.py")
    ap.add_argument("--keep", type=Path, help="keep every search's folder under this directory (default: a temp dir)")
    ap.add_argument("--quick", action="store_true", help="tiny data, 4 trials x 2 epochs, 1 seed, hard preset")
    ap.add_argument("--log", type=Path, help="append each finished run here (JSON lines); runs already there "
                                             "at the same --trials/--max-epochs/--n are kept, not rerun")
    ap.add_argument("--out", help="also write the JSON here")
    ap.add_argument("--report", action="store_true", help="train nothing: summarise the runs already in --log")
    args = ap.parse_args(argv)
    if args.quick:
        vars(args).update(QUICK)
    runs = read_log(args.log, args)

    def record(run: dict[str, Any]) -> None:
        run = {**run, "trials": args.trials, "max_epochs": args.max_epochs, "n": args.n}
        runs.append(run)
        print(json.dumps(run), file=sys.stderr)
        if args.log:
            with args.log.open("a") as f:
                f.write(json.dumps(run) + "\n")

    t0 = time.time()
    if not args.report:
        run_all(args, runs, record)
    per_seed: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for r in runs:
        if r["preset"] in args.presets and r["seed"] in args.seeds and r["line"] in args.lines:
            per_seed.setdefault(r["preset"], {}).setdefault(r["line"], []).append(r)
    out = {"machine": {"host": platform.node(), "cpus": os.cpu_count(), "processor": platform.processor()},
           "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
           "total_s": round(time.time() - t0, 1),
           "results": {p: {k: stats(v) for k, v in lines.items()} for p, lines in per_seed.items()},
           "targets": targets(per_seed, args.trials * args.max_epochs), "runs": per_seed}
    text = json.dumps(out, indent=2)
    if args.out:
        Path(args.out).write_text(text)
    print(text)
    return out


if __name__ == "__main__":
    main()
