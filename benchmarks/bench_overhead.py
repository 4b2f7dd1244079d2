"""GPU-like epochs on the CPU: how much of a search's wall time goes to training? Prints JSON.

At GPU speed the seed CNN trains a FER2013 epoch in about half a second, so what decides a
search's wall time is everything around its epochs (checkpoints, Ray's bookkeeping, start-up).
This shrinks the data until a CPU epoch is that short (--faces 1000: 800 training faces, ~0.7 s
on one idle core in bf16; a loaded machine needs fewer) and runs the real CLI, `fersearch
tune`, on a fixed seed-CNN space (only lr varies; no early stopping), 2 trials at a time:

  overhead   8 trials x 20 epochs, FIFO
  size       16 trials x 30 epochs, ASHA (the default scheduler): the experiment folder's size

each with this checkout's code ("after") and, with --before REV, with the code of git revision
REV ("before", e.g. the commit before a change), run alternately in one invocation.

  utilisation        images trained / (trials at once x the trainer's own images/s x wall)
                     (the trainer's images/s is fit's: training batches only)
  overhead_s_per_epoch  (trials at once x wall - training time) / epochs
  search_*           the same over Tuner.fit only (fersearch.json's search_s), without start-up

    python benchmarks/bench_overhead.py [--before REV] [--cases overhead,size] [--quick] [--out FILE]

--quick: 300 faces, 4 trials x 4 epochs (checks the plumbing; its figures mean nothing).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from fersearch.results import experiment as ex
from fersearch.results.record import load_record
from fersearch.search.checkpoints import folder_bytes

ROOT = Path(__file__).resolve().parent.parent
SPACE = '''"""The seed CNN, fixed (bench_overhead): only lr varies, no early stopping. lr: scientific."""


def space(trial):
    trial.suggest_float("lr", 5e-4, 2e-3, log=True)
    return {"patience": 0}
'''
CASES = {"overhead": dict(trials=8, max_epochs=20, scheduler="fifo"),
         "size": dict(trials=16, max_epochs=30, scheduler="asha")}


def source_tree(rev: str, into: Path) -> Path:
    """The package as it was at git revision `rev` (git archive: the shared checkout is not touched)."""
    into.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "fersearch", "search_spaces"],
                             capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def run_case(case: str, variant: str, src: Path | None, data: Path, n_train: int, space: Path, work: Path,
             settings: dict) -> dict:
    name = f"{case}-{variant}"
    cmd = [sys.executable, "-m", "fersearch", "tune", "--space", str(space), "--data", str(data),
           "--trials", str(settings["trials"]), "--max-epochs", str(settings["max_epochs"]),
           "--scheduler", settings["scheduler"], "--gpus", "0", "--cpus-per-trial", "1", "--seed", "0",
           "--name", name, "--results", str(work / "results"), "--quiet"]
    env = dict(os.environ)
    if src is not None:  # the driver and, through Ray's inherited environment, every trial import it
        env["PYTHONPATH"] = f"{src}{os.pathsep}{env['PYTHONPATH']}" if env.get("PYTHONPATH") else str(src)
    load_before = os.getloadavg()
    t0 = time.time()
    out = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True)
    wall = time.time() - t0
    if out.returncode != 0:
        return {"name": name, "error": (out.stderr or out.stdout).strip().splitlines()[-3:]}
    exp = work / "results" / name
    history, record = ex.read_history(exp), load_record(exp)
    epochs = len(history)
    train_s = float((n_train / history["images_per_s"]).sum())  # fit's own clock: training batches only
    slots = int(record.resources["concurrency"])
    search_s = float(record.search_s or wall)
    ckpts = [p for p in exp.glob("trial_*/checkpoint_*") if p.is_dir()]
    # Inside the trial, per epoch: Ray's iteration time minus fit's epoch time = the report and the
    # checkpoint (if any). Less sensitive to other load on the machine than the wall-time figures.
    reports = [json.loads(line) for f in exp.glob("trial_*/result.json") for line in f.read_text().splitlines()]
    gaps = [r["time_this_iter_s"] - r["epoch_time_s"] for r in reports[1:] if r.get("epoch", 0) > 1]
    return {
        "name": name, "variant": variant, "case": case, "code": str(src or ROOT), **settings, "concurrency": slots,
        "epochs": epochs, "wall_s": round(wall, 1), "search_s": round(search_s, 1), "train_s": round(train_s, 1),
        "epoch_train_s_mean": round(train_s / max(epochs, 1), 3),
        "utilisation": round(train_s / (slots * wall), 3),
        "overhead_s_per_epoch": round((slots * wall - train_s) / max(epochs, 1), 3),
        "search_utilisation": round(train_s / (slots * search_s), 3),
        "search_overhead_s_per_epoch": round((slots * search_s - train_s) / max(epochs, 1), 3),
        "in_trial_s_per_epoch_outside_fit": round(sum(gaps) / len(gaps), 4) if gaps else None,
        "folder_bytes": folder_bytes(exp), "checkpoints_left": len(ckpts),
        "checkpoint_bytes_each": round(sum(folder_bytes(c) for c in ckpts) / len(ckpts)) if ckpts else 0,
        "load_1min_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
    }


def _train_images(data: Path) -> int:
    from fersearch.data.loader import load

    fer = load(data, log=lambda _m: None)
    return int((fer.subset("train")[1] >= 0).sum())


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", help="git revision whose code is the 'before' variant (e.g. HEAD~3)")
    ap.add_argument("--after", help="git revision for the 'after' variant (default: this checkout's files, "
                    "uncommitted changes included)")
    ap.add_argument("--variants", default="before,after", help="which to run (with --before: both, alternately)")
    ap.add_argument("--cases", default="overhead,size")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--faces", type=int, default=1000, help="faces in the data set (80%% train; 1000: 800 train)")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    from fersearch.data.synth import write_synthetic

    with tempfile.TemporaryDirectory(prefix="bench_overhead-") as tmp:
        work = Path(tmp)
        data = write_synthetic(work / "data", n=300 if args.quick else args.faces, seed=0)  # 80 % train
        n_train = _train_images(data)
        space = work / "fixed_seed.py"
        space.write_text(SPACE)
        variants: list[tuple[str, Path | None]] = []
        wanted = args.variants.split(",")
        if args.before and "before" in wanted:
            variants.append(("before", source_tree(args.before, work / "before-src")))
        if "after" in wanted:
            variants.append(("after", source_tree(args.after, work / "after-src") if args.after else None))
        runs = []
        for case in args.cases.split(","):
            settings = dict(CASES[case])
            if args.quick:
                settings.update(trials=4, max_epochs=4)
            for variant, src in variants:  # alternately, so both see the same machine load
                runs.append(run_case(case, variant, src, data, n_train, space, work, settings))
                print(json.dumps(runs[-1]), file=sys.stderr)
        result = {"benchmark": "bench_overhead", "train_images": n_train, "quick": args.quick,
                  "before": args.before, "after": args.after or "working tree",
                  "machine": {"cpus": os.cpu_count(), "torch": torch.__version__, "threads_per_trial": 1},
                  "runs": runs}
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(text)
    return result


if __name__ == "__main__":
    main()
