"""Is the tie set `fersearch best` prints exactly the trials within z paired SEs of the best? Prints JSON.

For every search folder under the given directories (bench_search.py --keep DIR keeps them),
runs `fersearch best FOLDER --json` and recomputes the tie set from the folder's own files,
written out here independently of fersearch's code: trials.csv ranked by best_val_acc (ties to
the earlier row; diverged trials never count), each trial's per-image record at its best epoch
from per_image.jsonl, and McNemar's SE of the paired difference, sqrt((b + c) - (b - c)^2 / n) / n
with b, c the images only one of the two gets right. A trial is tied when |difference| <= z * SE,
z from fersearch.json's noise block.

    python benchmarks/bench_ties.py /work/bench/keep
"""

from __future__ import annotations

import argparse
import base64
import csv
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np


def bits(text: str) -> np.ndarray:
    size, data = text.split(":", 1)
    return np.unpackbits(np.frombuffer(base64.b64decode(data), dtype=np.uint8))[:int(size)].astype(bool)


def expected_ties(folder: Path) -> tuple[str | None, list[str]]:
    """(best trial, the trials tied with it, in rank order) from the folder's files alone."""
    with (folder / "trials.csv").open() as f:
        rows = [r for r in csv.DictReader(f) if r["best_val_acc"] and r["status"] != "diverged"]
    rows = sorted(enumerate(rows), key=lambda ir: (-float(ir[1]["best_val_acc"]), ir[0]))
    records: dict[tuple[str, int], str] = {}
    for line in (folder / "per_image.jsonl").read_text().splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        records[(rec["trial_id"], int(rec["epoch"]))] = rec["val_correct"]
    z = float(json.loads((folder / "fersearch.json").read_text())["noise"]["z"])
    best = rows[0][1]
    a = bits(records[(best["trial_id"], int(float(best["best_epoch"])))])
    tied = []
    for _, r in rows[1:]:
        key = (r["trial_id"], int(float(r["best_epoch"])))
        if key not in records:
            continue
        b = bits(records[key])
        n = len(a)
        only_a, only_b = int((a & ~b).sum()), int((b & ~a).sum())
        se = math.sqrt(max(only_a + only_b - (only_a - only_b) ** 2 / n, 0.0)) / n
        if abs(b.mean() - a.mean()) <= z * se:
            tied.append(r["trial_id"])
    return best["trial_id"], tied


def printed_ties(folder: Path) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, "-m", "fersearch", "best", str(folder), "--json"], capture_output=True,
                          text=True, check=True)
    return json.loads(proc.stdout)["ties"]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dirs", nargs="+", type=Path, help="directories holding search folders (searched recursively)")
    args = ap.parse_args(argv)
    folders = sorted({p.parent for d in args.dirs for p in d.rglob("per_image.jsonl")})
    out: dict[str, Any] = {"searches": {}}
    for folder in folders:
        best, tied = expected_ties(folder)
        shown = printed_ties(folder)
        out["searches"][str(folder)] = {"best": best, "expected": tied, "printed": shown["tied"],
                                        "equal": shown["best"] == best and shown["tied"] == tied}
    out["all_equal"] = all(v["equal"] for v in out["searches"].values())
    out["searches_checked"] = len(folders)
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
