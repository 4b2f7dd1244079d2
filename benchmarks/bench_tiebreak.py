"""What does the tie-break of `best --evaluate` change? Runs it on kept bench_search searches; prints JSON.

For every `default-<seed>` search folder under DIR (`bench_search.py --keep DIR`, synthetic data
made again from the folder's preset and --n), runs the product's `evaluate(folder, ties=K)`:
the tied configurations (up to K) retrained with 2 seeds each, the pick by mean best val_acc,
its test accuracy. Next to it, from the bench log (--log), the test accuracy of the search's
winner retrained alone (bench_search's headline line). Per folder: the tie set, the pick,
whether it changed the winner, both test accuracies and the wall time.

    python benchmarks/bench_tiebreak.py /work/bench/keep --n 2400 --log /work/bench/runs.jsonl

--paired: for every `<line>-<seed>` folder (--line, default `default`), retrain each configuration
--ties K would retrain with the same seeds (0, 1) and score all of them on test: --ties 1's pick (the
search's best) and --ties K's pick (the highest mean retrained val_acc) are then compared on the same
retrains, so a difference is the tie-break's own effect, not retrain noise.

    python benchmarks/bench_tiebreak.py results/bench_search28/keep --n 2400 --paired --line mix --out tb.json
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

PAIRED_SEEDS = (0, 1)


def paired(folder: Path, fer: Any, ties: int) -> dict[str, Any]:
    """--ties 1 against --ties K on the same retrains (PAIRED_SEEDS each): their picks and mean test accuracies."""
    import numpy as np
    from bench_search import trainings  # one-CPU Ray tasks, as many at once as there are CPUs

    from fersearch.report import tiebreak
    from fersearch.report.best import best

    t0 = time.time()
    bt = best(folder)
    ids = tiebreak.tie_set(bt, ties)
    jobs = {f"{tid}@{s}": tiebreak.trial_as_best(bt, tid).config.replace(seed=s) for tid in ids for s in PAIRED_SEEDS}
    done = trainings(jobs, fer) if len(ids) > 1 else {}
    val = {tid: float(np.mean([done[f"{tid}@{s}"]["best_val_acc"] for s in PAIRED_SEEDS])) for tid in ids if done}
    test = {tid: float(np.mean([done[f"{tid}@{s}"]["test_acc"] for s in PAIRED_SEEDS])) for tid in ids if done}
    pick = max(val, key=lambda k: val[k]) if val else ids[0]
    return {"tied": ids, "retrain_val_acc": val, "retrain_test_acc": test, "pick_ties_1": ids[0], "pick_ties_k": pick,
            "changed": pick != ids[0], "test_acc_ties_1": test.get(ids[0]), "test_acc_ties_k": test.get(pick),
            "wall_s": round(time.time() - t0, 1), "load": round(os.getloadavg()[0], 2)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from fersearch.data.synth import synthetic_data
    from fersearch.report.evaluate import evaluate

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("keep", type=Path, help="bench_search.py --keep DIR: <preset>/default-<seed> folders")
    ap.add_argument("--n", type=int, required=True, help="the synthetic faces per data set bench_search used")
    ap.add_argument("--ties", type=int, default=3)
    ap.add_argument("--log", type=Path, help="bench_search's --log, for the winner-alone test accuracy")
    ap.add_argument("--out", type=Path, help="also write the JSON here; folders already there are kept")
    ap.add_argument("--paired", action="store_true", help="--ties 1 against --ties K on the same retrains")
    ap.add_argument("--line", default="default", help="the search line whose <line>-<seed> folders to use")
    args = ap.parse_args(argv)
    alone = {}
    if args.log and args.log.exists():
        for line in args.log.read_text().splitlines():
            r = json.loads(line)
            if r["line"] == "default" and r["n"] == args.n:
                alone[(r["preset"], r["seed"])] = r["test_acc"]
    out: dict[str, Any] = json.loads(args.out.read_text()) if args.out and args.out.exists() else {"searches": {}}
    data: dict[str, Any] = {}
    for folder in sorted(args.keep.glob(f"*/{args.line}-*")):
        if not folder.is_dir() or str(folder) in out["searches"] or not (folder / "trials.csv").exists():
            continue
        preset, seed = folder.parent.name, int(folder.name.split("-")[-1])
        if args.paired:
            if not (folder / "fersearch.json").exists() or not (folder / "study.journal").exists():
                continue
            fer = data.setdefault(preset, synthetic_data(args.n, 0, preset))
            out["searches"][str(folder)] = {"preset": preset, "seed": seed, **paired(folder, fer, args.ties)}
            if args.out:
                args.out.write_text(json.dumps(out, indent=2))
            continue
        if (preset, seed) not in alone:  # not finished (its line is not in the log yet)
            continue
        fer = data.setdefault(preset, synthetic_data(args.n, 0, preset))
        t0 = time.time()
        ev = evaluate(folder, data=fer, ties=args.ties, log=lambda _line: None)
        record = ev.metrics.get("tie_break") or {}
        out["searches"][str(folder)] = {
            "preset": preset, "seed": seed, "tied": record.get("tied", []), "retrained": record.get("retrained", []),
            "pick": record.get("picked"), "changed": record.get("changed"),
            "test_acc_tiebreak": float(ev.metrics["accuracy"]), "test_acc_winner_alone": alone[(preset, seed)],
            "wall_s": round(time.time() - t0, 1)}
        if args.out:
            args.out.write_text(json.dumps(out, indent=2))
    if args.paired:
        rows = [r for r in out["searches"].values() if "pick_ties_k" in r and r["test_acc_ties_1"] is not None]
        diffs = [100 * (r["test_acc_ties_k"] - r["test_acc_ties_1"]) for r in rows]
        out["summary"] = {"searches": len(out["searches"]), "with_ties": len(rows),
                          "changed": sum(r["changed"] for r in rows),
                          "ties_k_minus_ties_1_points": round(sum(diffs) / len(diffs), 2) if diffs else None,
                          "per_search_points": [round(d, 1) for d in diffs]}
        if args.out:
            args.out.write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
