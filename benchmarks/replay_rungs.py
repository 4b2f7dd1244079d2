"""Which stop rule, grace period and reduction factor? Replays recorded FIFO curves through the schedulers; prints JSON.

Reads the curves `bench_search.py --curves FILE` (random_fifo's trials, each epoch's val_acc,
val_loss and per-image validation records) or `bench_sampler.py --out FILE` (no per-image
records: the paired rule falls back to the unpaired margins) recorded (every trial trained to
the end) and replays them through NoiseAwareASHA and Ray's plain
ASHA as a search would have run them: `--concurrency` trials at a time, one time unit
per epoch, a stopped trial's slot going to the next trial. No training: each setting
costs milliseconds. Per curve file, grace period, reduction factor and scheduler: the
best val_acc the search would have seen, its loss against FIFO on the same
configurations, whether it kept FIFO's winner (within `--keep` of its best) and the
share of FIFO's epochs. Schedulers:

  paired      NoiseAwareASHA as fersearch runs it: val_acc, val_loss where val_acc holds, each
              compared with the rung's cutoff trial on the same images
  noise       the same rule unpaired (paired=False): margins from binomial SEs and loss_sd
  noise-acc   NoiseAwareASHA unpaired on val_acc alone (loss_sd None)
  asha        Ray's ASHAScheduler on val_acc
  asha-loss   Ray's ASHAScheduler on val_loss

    python benchmarks/bench_search.py --n 2400 --curves curves.jsonl --log runs.jsonl
    python benchmarks/replay_rungs.py curves.jsonl --graces 2 3 5 --reduction-factors 2 3 4

The table on stderr: one row per setting, per scheduler the share of FIFO's epochs and
a * where FIFO's winner was lost, for each search in the files. The JSON's `paired` block
checks the paired rule's targets at each setting: the paired rule keeps FIFO's winner (within
--keep) in every search, never stops a trial at a decision where the unpaired rule keeps it
for a reason other than the margin (few, above, flat, majority), and trains at most 85% of the
unpaired rule's epochs on each data set. --n-val and --majority default to what the per-image
records say (the images recorded, the majority rate is the noise block's, given with --majority).
"""

from __future__ import annotations

import argparse
import heapq
import json
import sys
from dataclasses import dataclass
from typing import Any

SCHEDULERS = ("paired", "noise", "noise-acc", "asha", "asha-loss")
PER_IMAGE_KEYS = ("val_correct", "val_losses")  # fersearch.paired.CORRECT_KEY, LOSSES_KEY
MARGIN_REASONS = ("close", "stop", "loss")  # the unpaired rule's reasons the paired rule may turn into a stop


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
        result = {"training_iteration": epoch, "val_acc": accs[epoch - 1], "val_loss": curves[i]["val_loss"][epoch - 1],
                  **{k: curves[i][k][epoch - 1] for k in PER_IMAGE_KEYS if curves[i].get(k)}}
        seen.append(result["val_acc"])
        epochs += 1
        action = scheduler.on_trial_result(None, _Trial(str(i)), result)
        if epoch < len(accs) and action == TrialScheduler.CONTINUE:
            heapq.heappush(running, (clock + 1, i, epoch + 1))
        else:
            stopped += epoch < len(accs)
            scheduler.on_trial_complete(None, _Trial(str(i)), result)
    out = {"best_val_acc": max(seen), "epochs": epochs, "stopped": stopped}
    decisions = getattr(scheduler, "decisions", None)
    if decisions is not None:  # NoiseAwareASHA: how its stops compare with the unpaired rule's reasons
        stops = [d for d in decisions if d.stopped]
        out["paired_stops_unpaired_held"] = sum(d.unpaired_reason == "close" for d in stops)
        # A stop is a margin call when the unpaired rule held the trial on a margin: its accuracy within the
        # margin of the cutoff ("close"), or its loss within the loss margin (it asked the loss: flat, majority,
        # close or a tie above the cutoff). Anything else would break a guard (few, flat/majority on val_acc).
        out["stops_against_unpaired_guard"] = sum(d.unpaired_reason not in MARGIN_REASONS
                                                  and d.unpaired_loss_margin is None for d in stops)
    return out


def make_scheduler(name: str, n_val: int, majority: float, loss_sd: float, **common: Any) -> Any:
    from ray.tune.schedulers import ASHAScheduler

    from fersearch.search.scheduler import NoiseAwareASHA

    if name.startswith("noise") or name == "paired":
        return NoiseAwareASHA(n_val=n_val, majority=majority, loss_sd=None if name == "noise-acc" else loss_sd,
                              paired=name == "paired", metric="val_acc", mode="max", **common)
    return ASHAScheduler(**({"metric": "val_loss", "mode": "min"} if name == "asha-loss" else
                            {"metric": "val_acc", "mode": "max"}), **common)


def replay_search(search: dict[str, Any], graces: list[int], factors: list[float], n_val: int, majority: float,
                  loss_sd: float, keep: float, concurrency: int) -> dict[str, Any]:
    """Every (grace, reduction factor, scheduler) on one recorded search, next to FIFO. The search's own
    noise block (n_val, majority), when it recorded one, wins over the arguments."""
    curves = search["curves"]
    noise = search.get("noise") or synthetic_noise(search) or {}
    n_val = int(noise.get("n_val") or n_val or recorded_n(curves))
    majority = noise.get("majority", majority)
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
            "n_val": n_val, "majority": majority, "max_t": max_t, "fifo": fifo, "replays": rows}


def synthetic_noise(search: dict[str, Any]) -> dict[str, Any] | None:
    """The noise block of a bench_search.py search that recorded none (curves written before it did): its
    data set is synthetic (preset, n, data seed 0), so the validation labels are made again."""
    if "preset" not in search or "n" not in search:
        return None
    from dataclasses import asdict

    from fersearch.data.synth import synthetic_data
    from fersearch.results.noise import noise_inputs

    fer = synthetic_data(int(search["n"]), 0, search["preset"])
    return asdict(noise_inputs(fer.labels[fer.split == 1]))


def recorded_n(curves: list[dict[str, Any]]) -> int:
    """The validation images the per-image records were taken on ("600:..." strings)."""
    for c in curves:
        for rec in c.get("val_correct") or ():
            if isinstance(rec, str):
                return int(rec.split(":", 1)[0])
    raise SystemExit("replay_rungs: these curves have no per-image records: give --n-val")


def paired_targets(results: list[dict[str, Any]], graces: list[int], factors: list[float],
                   keep: float) -> dict[str, Any]:
    """The targets for the paired rule, per setting: FIFO's winner kept in every search, no stop
    against an unpaired guard, and per data set the paired rule's epochs over the unpaired rule's."""
    out: dict[str, Any] = {}
    for grace in graces:
        for rf in factors:
            key = f"grace{grace}/rf{rf:g}"
            pa = [r["replays"][f"paired/{key}"] for r in results]
            un = [r["replays"][f"noise/{key}"] for r in results]
            share: dict[str, Any] = {}
            for preset in sorted({str(r["preset"]) for r in results}):
                ix = [i for i, r in enumerate(results) if str(r["preset"]) == preset]
                share[preset] = round(sum(pa[i]["epochs"] for i in ix) / max(1, sum(un[i]["epochs"] for i in ix)), 3)
            out[key] = {
                "kept_fifo_winner": f"{sum(p['kept'] for p in pa)} of {len(pa)}",
                "worst_loss_vs_fifo": max(p["loss"] for p in pa),
                "unpaired_kept_winner": f"{sum(u['kept'] for u in un)} of {len(un)}",
                "stops_against_unpaired_guard": sum(p.get("stops_against_unpaired_guard", 0) for p in pa),
                "stops_the_unpaired_rule_held_as_close": sum(p.get("paired_stops_unpaired_held", 0) for p in pa),
                "epochs_vs_unpaired": share,
                "met": bool(all(p["kept"] for p in pa) and all(v <= 0.85 for v in share.values())
                            and not any(p.get("stops_against_unpaired_guard") for p in pa)),
            }
    return out


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
    from fersearch.results.noise import LOSS_SD

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("curves", nargs="+", help="JSON lines from bench_search.py --curves or bench_sampler.py --out")
    ap.add_argument("--graces", nargs="+", type=int, default=[2, 3, 5])
    ap.add_argument("--reduction-factors", nargs="+", type=float, default=[2, 3, 4])
    ap.add_argument("--n-val", type=int, help="validation images of the data the curves came from "
                                              "(default: the search's noise block, else the per-image records)")
    ap.add_argument("--majority", type=float, help="its majority-class rate (default: the search's noise block)")
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
    print(json.dumps({"paired": paired_targets(out, args.graces, args.reduction_factors, args.keep),
                      "searches": out}, indent=2))


if __name__ == "__main__":
    main()
