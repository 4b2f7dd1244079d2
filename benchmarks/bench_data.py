"""Data-layer speed on a full-size (35,887-row) synthetic fer2013.csv, printed as JSON.

    python benchmarks/bench_data.py [--n 35887] [--keep DIR]

Measures: generating and writing the CSV, the first load (parse + cache write),
the cached load, and `fersearch data info` wall time, first (no cache) and second.
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

from fersearch.data import load
from fersearch.data.synth import write_synthetic


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, round(time.perf_counter() - t0, 3)


def _cli_info(path: Path) -> float:
    cmd = [sys.executable, "-m", "fersearch", "data", "info", str(path)]
    _, seconds = _timed(lambda: subprocess.run(cmd, check=True, capture_output=True))
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=35887, help="rows (FER2013 has 35,887)")
    ap.add_argument("--keep", type=Path, help="write here and keep the files (default: a temp dir)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp)
        csv, gen_s = _timed(lambda: write_synthetic(folder, n=args.n, seed=0))
        quiet = lambda m: None  # noqa: E731
        cache = csv.with_name(csv.name + ".fercache.npz")
        _, parse_s = _timed(lambda: load(csv, cache=False, log=quiet))
        _, first_s = _timed(lambda: load(csv, log=quiet))
        data, cached_s = _timed(lambda: load(csv, log=quiet))
        cache.unlink()
        cli_first = _cli_info(csv)
        cli_second = _cli_info(csv)
        print(json.dumps({
            "rows": data.n, "csv_mb": round(csv.stat().st_size / 1e6, 1), "cpus": os.cpu_count(),
            "load_avg_1min": round(os.getloadavg()[0], 2),
            "generate_and_write_s": gen_s, "parse_s": parse_s, "first_load_s": first_s, "cached_load_s": cached_s,
            "cli_info_first_s": cli_first, "cli_info_second_s": cli_second,
        }, indent=2))


if __name__ == "__main__":
    main()
