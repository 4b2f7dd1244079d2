"""What the search's trial state costs the driver per Tune event, at 10 and at 1,000 trials; prints JSON.

Drives the real recorder callback (search/recorder.make_recorder) with the events a
search of N trials x 30 epochs sends (8 trials at a time: start, one result per
epoch, complete), writing trials.csv and history.csv into a scratch directory as a
search does. Tune waits on this callback, so its cost per event must not grow with
the search: history.csv is appended, trials.csv rewritten only when a trial ends
and at most every few seconds otherwise. For comparison, `full_rewrite_s` is one
save of both files in full at the end (what every event cost before).

    .venv/bin/python benchmarks/bench_state.py [--trials 10,1000] [--epochs 30] [--live]
"""

from __future__ import annotations

import argparse
import io
import json
import random
import statistics
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

from fersearch.config import TrainConfig
from fersearch.results import experiment as ex
from fersearch.results.trial_files import write_history, write_trials
from fersearch.search.recorder import make_recorder

CONCURRENCY = 8


def fake_trial(i: int, rng: random.Random) -> SimpleNamespace:
    """What the recorder reads of a Tune Trial: its id and config (a wide-space-like one)."""
    config = {"blocks": 3, "filters_1": rng.choice([16, 32, 64]), "filters_2": rng.choice([32, 64, 128]),
              "filters_3": rng.choice([64, 128, 256]), "dropout": [0.25, 0.25, 0.25], "dense": rng.choice([256, 512]),
              "lr": 10 ** rng.uniform(-4, -2), "batch_size": rng.choice([32, 64, 128]), "batch_norm": rng.random() < .5}
    return SimpleNamespace(trial_id=f"{i:05d}abc", config=config, get_error=lambda: None)


def run(n_trials: int, epochs: int, live: bool) -> dict:
    rng = random.Random(0)
    with tempfile.TemporaryDirectory() as d:
        rec = make_recorder(d, total_trials=n_trials, max_epochs=epochs, to_config=TrainConfig.from_dict,
                            hide=("blocks",), live=live, stream=io.StringIO(), tty=False)
        rec.setup()
        trials: list = []
        times: list[float] = []

        def timed(hook, *args, **kw):
            t0 = time.perf_counter()
            hook(*args, **kw)
            times.append(time.perf_counter() - t0)

        running: dict = {}
        while len(trials) < n_trials or running:
            while len(running) < CONCURRENCY and len(trials) < n_trials:
                t = fake_trial(len(trials), rng)
                trials.append(t)
                running[t.trial_id] = [t, 0]
                timed(rec.on_trial_start, iteration=0, trials=trials, trial=t)
            for tid, slot in list(running.items()):
                t, slot[1] = slot[0], slot[1] + 1
                epoch = slot[1]
                metrics = {"epoch": epoch, "training_iteration": epoch, "train_loss": 1.5 - epoch / 40,
                           "train_acc": 0.3 + epoch / 100, "val_loss": 1.6 - epoch / 50, "val_acc": rng.uniform(.2, .6),
                           "lr": 1e-3, "images_per_s": 5000.0, "epoch_time_s": 2.0, "node": "abcdef12" * 7,
                           "gpu_ids": "0", "done": epoch == epochs}
                timed(rec.on_trial_result, iteration=epoch, trials=trials, trial=t, result=metrics)
                if epoch == epochs:
                    timed(rec.on_trial_complete, iteration=epoch, trials=trials, trial=t)
                    del running[tid]
            timed(rec.on_step_end, iteration=0, trials=trials)
        timed(rec.on_experiment_end, trials=trials)

        rows = list(rec.state.rows.values())
        history = ex.read_history(d)
        t0 = time.perf_counter()
        write_trials(d, rows)
        write_history(d, history.to_dict("records"))
        full = time.perf_counter() - t0
        assert len(history) == n_trials * epochs and len(ex.read_trials(d)) == n_trials
        sizes = {p.name: p.stat().st_size for p in Path(d).glob("*.csv")}
    ms = sorted(t * 1e3 for t in times)
    return {"trials": n_trials, "epochs": epochs, "events": len(times), "live_view": live,
            "per_event_ms": {"mean": round(statistics.fmean(ms), 4), "median": round(statistics.median(ms), 4),
                             "p99": round(ms[int(0.99 * (len(ms) - 1))], 3), "max": round(ms[-1], 2)},
            "callback_total_s": round(sum(times), 3),
            "full_rewrite_s": round(full, 4),
            "file_bytes": sizes}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", default="10,1000", help="comma-separated trial counts")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--live", action="store_true", help="also draw the (non-TTY) live view")
    args = p.parse_args()
    run(3, 2, args.live)  # warm-up: first imports and first writes are not what a search pays per event
    runs = [run(int(n), args.epochs, args.live) for n in args.trials.split(",")]
    small, large = runs[0]["per_event_ms"]["mean"], runs[-1]["per_event_ms"]["mean"]
    print(json.dumps({"runs": runs, "mean_per_event_ratio_last_vs_first": round(large / small, 2)}, indent=2))


if __name__ == "__main__":
    main()
