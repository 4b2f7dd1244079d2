"""What does the tie-break of `best --evaluate` change? Runs it on kept bench_search searches; prints JSON.

For every `default-<seed>` search folder under DIR (`bench_search.py --keep DIR`, synthetic data
made again from the folder's preset and --n), runs the product's `evaluate(folder, ties=K)`:
the tied configurations (up to K) retrained with 2 seeds each, the pick by mean best val_acc,
its test accuracy. Next to it, from the bench log (--log), the test accuracy of the search's
winner retrained alone (bench_search's headline line). Per folder: the tie set, the pick,
whether it changed the winner, both test accuracies and the wall time.

    python benchmarks/bench_tiebreak.py /work/bench/keep --n 2400 --log /work/bench/runs.jsonl
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from fersearch.data.synth import synthetic_data
    from fersearch.report.evaluate import evaluate

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("keep", type=Path, help="bench_search.py --keep DIR: <preset>/default-<seed> folders")
    ap.add_argument("--n", type=int, required=True, help="the synthetic faces per data set bench_search used")
    ap.add_argument("--ties", type=int, default=3)
    ap.add_argument("--log", type=Path, help="bench_search's --log, for the winner-alone test accuracy")
    ap.add_argument("--out", type=Path, help="also write the JSON here; folders already there are kept")
    args = ap.parse_args(argv)
    alone = {}
    if args.log and args.log.exists():
        for line in args.log.read_text().splitlines():
            r = json.loads(line)
            if r["line"] == "default" and r["n"] == args.n:
                alone[(r["preset"], r["seed"])] = r["test_acc"]
    out: dict[str, Any] = json.loads(args.out.read_text()) if args.out and args.out.exists() else {"searches": {}}
    data: dict[str, Any] = {}
    for folder in sorted(args.keep.glob("*/default-*")):
        if not folder.is_dir() or str(folder) in out["searches"] or not (folder / "trials.csv").exists():
            continue
        preset, seed = folder.parent.name, int(folder.name.split("-")[-1])
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
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
