"""Which grace period and reduction factor? Replays recorded FIFO curves through the schedulers; prints JSON.

Reads the curves `bench_sampler.py --out FILE` recorded (every trial trained to the end,
val_acc and val_loss per epoch) and replays them through NoiseAwareASHA and Ray's plain
ASHA as a search would have run them: `--concurrency` trials at a time, one time unit
per epoch, a stopped trial's slot going to the next trial. No training: each setting
costs milliseconds. Per curve file, grace period, reduction factor and scheduler: the
best val_acc the search would have seen, its loss against FIFO on the same
configurations, whether it kept FIFO's winner (within `--keep` of its best) and the
share of FIFO's epochs. Schedulers:

  noise       NoiseAwareASHA as fersearch runs it (val_acc, val_loss where val_acc holds)
  noise-acc   NoiseAwareASHA on val_acc alone (loss_sd None)
  asha        Ray's ASHAScheduler on val_acc
  asha-loss   Ray's ASHAScheduler on val_loss

    python benchmarks/bench_sampler.py --variants random --trials 16 --epochs 10 --presets hard --out curves.jsonl
    python benchmarks/replay_rungs.py curves.jsonl --graces 1 2 3 --reduction-factors 2 3 4 --n-val 400 --majority 0.25

The table on stderr: one row per setting, per scheduler the share of FIFO's epochs and
a * where FIFO's winner was lost, for each search in the files.
"""

from __future__ import annotations

import argparse
import heapq
import json
import sys
from dataclasses import dataclass
from typing import Any

SCHEDULERS = ("noise", "noise-acc", "asha", "asha-loss")


@dataclass(frozen=True)
class _Trial:
    trial_id: str


def replay(curves: list[dict[str, list[float]]], scheduler: Any, concurrency: int = 2) -> dict[str, Any]:
    """Run `curves` (per trial: val_acc and val_loss per epoch, in sampling order) through `scheduler`."""
    from ray.tune.schedulers import TrialScheduler

    queue = list(enumerate(curves))[::-1]
    running: list[tuple[int, int, int]] = []  # (time of its next result, trial index, epoch)
    seen, epochs, stopped, clock = [], 0, 0, 0
    while queue or running:
        while queue and len(running) < concurrency:
            i, _ = queue.pop()
            scheduler.on_trial_add(None, _Trial(str(i)))
            heapq.heappush(running, (clock + 1, i, 1))
        clock, i, epoch = heapq.heappop(running)
        accs = curves[i]["val_acc"]
        result = {"training_iteration": epoch, "val_acc": accs[epoch - 1], "val_loss": curves[i]["val_loss"][epoch - 1]}
        seen.append(result["val_acc"])
        epochs += 1
        action = scheduler.on_trial_result(None, _Trial(str(i)), result)
        if epoch < len(accs) and action == TrialScheduler.CONTINUE:
            heapq.heappush(running, (clock + 1, i, epoch + 1))
        else:
            stopped += epoch < len(accs)
            scheduler.on_trial_complete(None, _Trial(str(i)), result)
    return {"best_val_acc": max(seen), "epochs": epochs, "stopped": stopped}


def make_scheduler(name: str, n_val: int, majority: float, loss_sd: float, **common: Any) -> Any:
    from ray.tune.schedulers import ASHAScheduler

    from fersearch.search.scheduler import NoiseAwareASHA

    if name.startswith("noise"):
        return NoiseAwareASHA(n_val=n_val, majority=majority, loss_sd=None if name == "noise-acc" else loss_sd,
                              metric="val_acc", mode="max", **common)
    return ASHAScheduler(**({"metric": "val_loss", "mode": "min"} if name == "asha-loss" else
                            {"metric": "val_acc", "mode": "max"}), **common)


def replay_search(search: dict[str, Any], graces: list[int], factors: list[float], n_val: int, majority: float,
                  loss_sd: float, keep: float, concurrency: int) -> dict[str, Any]:
    """Every (grace, reduction factor, scheduler) on one recorded search, next to FIFO."""
    curves = search["curves"]
    max_t = max(len(c["val_acc"]) for c in curves)
    fifo = {"best_val_acc": max(max(c["val_acc"]) for c in curves), "epochs": sum(len(c["val_acc"]) for c in curves)}
    rows = {}
    for grace in graces:
        for rf in factors:
            for name in SCHEDULERS:
                scheduler = make_scheduler(name, n_val, majority, loss_sd, max_t=max_t, grace_period=grace,
                                           reduction_factor=rf)
                r = replay(curves, scheduler, concurrency)
                r["loss"] = round(fifo["best_val_acc"] - r["best_val_acc"], 4)
                r["kept"] = r["loss"] <= keep
                r["epochs_share"] = round(r["epochs"] / fifo["epochs"], 3)
                rows[f"{name}/grace{grace}/rf{rf:g}"] = r
    return {"preset": search.get("preset"), "seed": search.get("seed"), "variant": search.get("variant"),
            "fifo": fifo, "replays": rows}


def table(results: list[dict[str, Any]], graces: list[int], factors: list[float]) -> str:
    """Share of FIFO's epochs per setting and scheduler, one column per search; * marks a lost winner."""
    heads = [f"{r['preset']}/s{r['seed']}" for r in results]
    lines = ["grace rf  " + "  ".join(f"{name:>{12 * len(heads)}}" for name in SCHEDULERS),
             "          " + "  ".join(" ".join(f"{h:>11}" for h in heads) for _ in SCHEDULERS)]
    for grace in graces:
        for rf in factors:
            cells = []
            for name in SCHEDULERS:
                rs = [r["replays"][f"{name}/grace{grace}/rf{rf:g}"] for r in results]
                cells.append(" ".join(f"{x['epochs_share']:>10.0%}{' ' if x['kept'] else '*'}" for x in rs))
            lines.append(f"{grace:>5} {rf:<3g} " + "  ".join(cells))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    from fersearch.search.noise import LOSS_SD

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("curves", nargs="+", help="JSON lines from bench_sampler.py --out")
    ap.add_argument("--graces", nargs="+", type=int, default=[1, 2, 3])
    ap.add_argument("--reduction-factors", nargs="+", type=float, default=[2, 3, 4])
    ap.add_argument("--n-val", type=int, required=True, help="validation images of the data the curves came from")
    ap.add_argument("--majority", type=float, required=True, help="its majority-class rate")
    ap.add_argument("--loss-sd", type=float, default=LOSS_SD, help="nats per image assumed by the loss margin")
    ap.add_argument("--keep", type=float, default=0.01, help="a best val_acc within this of FIFO's keeps the winner")
    ap.add_argument("--concurrency", type=int, default=2)
    args = ap.parse_args(argv)
    searches = []
    for path in args.curves:
        with open(path) as f:
            searches += [json.loads(line) for line in f if line.strip()]
    out = [replay_search(s, args.graces, args.reduction_factors, args.n_val, args.majority, args.loss_sd, args.keep,
                         args.concurrency) for s in searches]
    print(table(out, args.graces, args.reduction_factors), file=sys.stderr)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
