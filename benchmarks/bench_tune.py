"""Benchmark `fersearch tune` on the embedded default data; prints JSON.

Runs the real CLI (`fersearch tune ... --quiet`) in a scratch directory:
  asha_wide   the default command, `fersearch tune --trials 8` (wide space, TPE, ASHA)
  fifo_wide   the same with --scheduler fifo (every trial to --max-epochs or early stopping)
  asha_seed   the same budget on the seed space (asha_seed vs asha_wide picked the default space)
  fifo_seed   the seed space without ASHA
and reports for each: wall time, where it went (start-up = imports + data + Ray
start; search; training = sum of epoch times), per-trial overhead (trial-slot time
not spent training), total epochs, trials stopped by ASHA, the best val_acc.

    python benchmarks/bench_tune.py [--trials 8] [--max-epochs 30] [--runs asha_wide,fifo_wide,...] [--reuse]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from fersearch.results import experiment as ex
from fersearch.results.record import ExperimentRecord, load_record

RUNS = {
    "asha_wide": ["--space", "wide"],  # = the default `fersearch tune --trials 8`
    "fifo_wide": ["--space", "wide", "--scheduler", "fifo"],
    "asha_seed": ["--space", "seed"],
    "fifo_seed": ["--space", "seed", "--scheduler", "fifo"],
}


def run(name: str, extra: list[str], workdir: Path, trials: int, max_epochs: int, seed: int,
        reuse: bool = False) -> dict:
    cmd = [sys.executable, "-m", "fersearch", "tune", "--trials", str(trials), "--max-epochs", str(max_epochs),
           "--seed", str(seed), "--name", name, "--quiet", *extra]
    exp = workdir / "results" / name
    wall_file = exp / "bench_wall_s.txt"
    if not reuse:
        t0 = time.time()
        out = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True)
        if out.returncode != 0:
            return {"name": name, "error": (out.stderr or out.stdout).strip().splitlines()[-1:]}
        wall_file.write_text(f"{time.time() - t0:.1f}")
    wall = float(wall_file.read_text()) if wall_file.is_file() else float("nan")
    trials_df, history, record = ex.read_trials(exp), ex.read_history(exp), load_record(exp)
    search_s = record.search_s or _search_s_from_files(exp, record)
    train_s = float(history["epoch_time_s"].sum())
    slots = record.resources["concurrency"]
    best = ex.best_trial(trials_df)
    return {
        "name": name, "command": " ".join(["fersearch", *cmd[3:]]), "wall_s": round(wall, 1),
        "startup_s": round(wall - search_s, 1), "search_s": search_s, "train_s": round(train_s, 1),
        "concurrency": slots,
        # trial-slot time not spent in fit's epochs: worker start, data fetch, checkpoints, scheduling
        # gaps, and slots left idle while the last trials finish
        "slot_overhead_per_trial_s": round((search_s * slots - train_s) / len(trials_df), 2),
        # inside a trial (Ray's clock from trial start to last report) minus its epochs: model build,
        # data from the object store, checkpoints, reporting
        "in_trial_overhead_s": _in_trial_overhead(exp, history),
        "epoch_s_mean": round(float(history["epoch_time_s"].mean()), 2),
        "total_epochs": int(trials_df["epochs"].sum()),
        "statuses": trials_df["status"].value_counts().to_dict(),
        "best_val_acc": round(float(best["best_val_acc"]), 4) if best else None,
        "best_epoch": best and int(best["best_epoch"]),
        "best_params": best and {k[len(ex.PARAM_PREFIX):]: v for k, v in best.items()
                                 if k.startswith(ex.PARAM_PREFIX) and v is not None},
        "data": {"path": record.data.path, "n": record.data.n},
    }


def _in_trial_overhead(exp: Path, history) -> float:
    per_trial = []
    for trial_id, epochs in history.groupby("trial_id")["epoch_time_s"]:
        lines = (exp / f"trial_{trial_id}" / "result.json").read_text().splitlines()
        per_trial.append(json.loads(lines[-1])["time_total_s"] - float(epochs.sum()))
    return round(sum(per_trial) / len(per_trial), 2)


def _search_s_from_files(exp: Path, record: ExperimentRecord) -> float:
    """Older runs without search_s: from fersearch.json's creation to trials.csv's last write."""
    created = datetime.fromisoformat(str(record.created)).timestamp()
    return round((exp / ex.TRIALS_FILE).stat().st_mtime - created, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--max-epochs", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--runs", default=",".join(RUNS), help="comma-separated subset of " + ", ".join(RUNS))
    ap.add_argument("--workdir", default=None, help="where results/ and data/ go (default: a temp dir)")
    ap.add_argument("--reuse", action="store_true", help="summarise runs already in --workdir instead of running")
    args = ap.parse_args()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench_tune_"))
    workdir.mkdir(parents=True, exist_ok=True)
    results = {"machine": {"cpus": os.cpu_count(), "load_avg_1m_at_start": round(os.getloadavg()[0], 1)},
               "trials": args.trials, "max_epochs": args.max_epochs, "workdir": str(workdir), "runs": []}
    for name in args.runs.split(","):
        results["runs"].append(run(name, RUNS[name], workdir, args.trials, args.max_epochs, args.seed, args.reuse))
        print(json.dumps(results["runs"][-1]), file=sys.stderr, flush=True)  # progress
    by = {r["name"]: r for r in results["runs"] if "error" not in r}
    for space in ("wide", "seed"):
        if f"asha_{space}" in by and f"fifo_{space}" in by:
            results[f"{space}_asha_vs_fifo"] = {k: [by[f"asha_{space}"][k], by[f"fifo_{space}"][k]]
                                                for k in ("total_epochs", "search_s", "best_val_acc")}
    if "asha_seed" in by and "asha_wide" in by:
        results["asha_seed_vs_wide"] = {k: [by["asha_seed"][k], by["asha_wide"][k]]
                                        for k in ("best_val_acc", "search_s", "total_epochs")}
    results["machine"]["load_avg_1m_at_end"] = round(os.getloadavg()[0], 1)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
