"""Does the search find better than its own recipes, at the budget users run? Prints JSON.

On the default synthetic data and the hard preset, for each of N seeds, at the same
budget (--trials, --max-epochs; 16 x 30, and 50 x 30 with one seed):
  mix                `fersearch tune` as shipped: the mix sampler (search/sampler.py: mutations of
                     the incumbent, the recipes' neighbourhood, TPE), the paired noise-aware ASHA
  tpe                --sampler tpe: the search before the mix sampler (TPE after the recipes)
  random_asha        --sampler random with the same stopping
  random_fifo        --sampler random --scheduler fifo: every configuration trained to the end
                     (its curves go to --curves for benchmarks/replay_rungs.py)
  oracle             random_fifo at --oracle-trials (64) x --max-epochs, once per data set (the first
                     seed), its winner retrained with 3 seeds: the headroom's top
  default            `fersearch tune` with no --sampler (the rows of the earlier logs)
  seed+<lever>       the seed CNN with one lever changed, trained alone for --max-epochs
  point:<name>       each warm-start point of the wide space (seed, std, bn-std, sgd-cosine,
                     augment) trained alone for --max-epochs; the one with the best validation
                     accuracy per seed is the floor ("the best recipe alone, picked by validation")
For each line: mean and sd over seeds of the best val_acc, of the test accuracy of the
winner retrained from scratch (for a single configuration: its own run, best epoch
restored), epochs trained and wall time; for searches also the share of winners that were
recipes and the proposal sources; then the mix sampler's targets, checked (targets()).

    python benchmarks/bench_search.py --lines mix tpe --seeds 0          # the headline pair, one seed
    python benchmarks/bench_search.py --lines oracle                      # the headroom, once per data set
    python benchmarks/bench_search.py --quick                             # tiny data, 4 trials x 2 epochs: < 1 min
    python benchmarks/bench_search.py --log runs.jsonl                    # cut short? run again: finished runs kept
    python benchmarks/bench_search.py --log runs.jsonl --keep runs/       # ...and a search cut short resumes
    python benchmarks/bench_search.py --log runs.jsonl --report --out bench.json   # summarise, train nothing

Searches run one after another in one local Ray (every CPU), so their wall times compare;
then the single configurations and the winners' retrains (one thread each) run as Ray
tasks, as many at once as there are CPUs. Each run records the machine's load average.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

SEARCHES = {"mix": {"sampler": "mix"}, "tpe": {"sampler": "tpe"}, "random_asha": {"sampler": "random"},
            "random_fifo": {"sampler": "random", "scheduler": "fifo"},
            "oracle": {"sampler": "random", "scheduler": "fifo"}, "default": {}}
ORACLE_SEEDS = (0, 1, 2)  # the oracle's winner is retrained with each
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
LINES = ["mix", "tpe", *(k for k in SINGLES if k.startswith("point:")), "random_asha", "oracle"]
QUICK = {"presets": ["hard"], "seeds": [0], "trials": 4, "max_epochs": 2, "n": 300, "oracle_trials": 4,
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
    """One search, alone on the machine (its wall time is the line's); the winner's retrain is left to `trainings`.
    A search whose folder is already under --keep (a run cut short before its row was logged) is resumed:
    its finished trials are kept, and the row says `resumed` (its wall time is then the resumed part's)."""
    from fersearch.report.best import best
    from fersearch.search.driver import tune

    name = f"{line}-{seed}"
    resumed = (root / name / "fersearch.json").exists()
    t0, load = time.time(), os.getloadavg()[0]
    result = tune(trials=trials, max_epochs=max_epochs, seed=seed, data=fer, results=root,
                  name=name, verbose=False, resume=resumed, **SEARCHES[line])
    wall = time.time() - t0
    if result.interrupted:  # Ctrl+C: Tune stopped the search and saved it; the next run resumes it
        sys.exit(f"bench_search: {line}-{seed} interrupted in {result.path}; run the same command again to resume it")
    winner = best(result.path)
    t = result.trials
    row = t[t["trial_id"] == winner.trial_id].iloc[0]
    sources = proposal_sources(result.path)
    return {"best_val_acc": float(winner.best_val_acc), "epochs": int(t["epochs"].sum()), "wall_s": round(wall, 1),
            "stopped": int((t["status"] == "stopped").sum()), "winner": winner.trial_id, "folder": str(result.path),
            "winner_recipe": is_recipe(row), "winner_source": winner_source(result.path, row),
            "sources": dict(Counter(sources)), "load": [round(load, 2), round(os.getloadavg()[0], 2)],
            "retrain": winner.config.replace(epochs=max_epochs, seed=seed), **({"resumed": True} if resumed else {})}


def _params_match(params: dict[str, Any], row: Any) -> bool:
    """Whether a trials.csv row holds these parameter values (floats to 1e-9)."""
    for k, v in params.items():
        cell = row.get(f"config/{k}")
        if isinstance(v, bool) or isinstance(cell, bool) or isinstance(v, str) or isinstance(cell, str):
            if str(cell) != str(v):
                return False
        elif cell is None or abs(float(cell) - float(v)) > 1e-9 * max(1.0, abs(float(v))):
            return False
    return True


def is_recipe(row: Any) -> bool:
    """Whether a search's winner (its trials.csv row) is one of the wide space's warm-start points."""
    return any(_params_match(p, row) for p in warm_start_points().values())


def proposal_sources(folder: str | Path) -> list[str]:
    """Each study trial's proposal source (the mix sampler's user attr; "" for tpe and random)."""
    from fersearch.results.study import load_study

    study = load_study(folder)
    return [str(t.user_attrs.get("source", "")) for t in study.get_trials(deepcopy=False)] if study else []


def winner_source(folder: str | Path, row: Any) -> str:
    """The winner's proposal source: its study trial found by its parameters ("recipe" for a warm-start point)."""
    from fersearch.results.study import load_study

    study = load_study(folder)
    for t in study.get_trials(deepcopy=False) if study else []:
        if t.params and _params_match(t.params, row):
            return str(t.user_attrs.get("source", "")) or ("recipe" if is_recipe(row) else "")
    return "recipe" if is_recipe(row) else ""


def search_curves(folder: str | Path) -> list[dict[str, Any]]:
    """Every trial's curves in sampling order (val_acc, val_loss and the per-image records per epoch):
    what replay_rungs.py replays."""
    from fersearch import paired
    from fersearch.results.experiment import read_history, read_per_image, read_trials

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
    from dataclasses import asdict

    from fersearch.config import TrainConfig
    from fersearch.results.record import load_record

    pending: dict[str, dict[str, Any]] = {}
    for line in (x for x in lines if x in SEARCHES and x not in done):
        if line == "oracle" and seed != args.seeds[0]:
            continue  # once per data set
        trials = args.oracle_trials if line == "oracle" else args.trials
        pending[line] = run_search(line, fer, seed, trials, args.max_epochs, root)
        if line == "random_fifo" and args.curves:  # for replay_rungs.py: the same curves through every rule
            with args.curves.open("a") as f:
                folder = pending[line]["folder"]
                f.write(json.dumps({"preset": preset, "seed": seed, "variant": "random", "max_epochs": args.max_epochs,
                                    "n": args.n, "noise": asdict(load_record(folder).noise),
                                    "curves": search_curves(folder)}) + "\n")
    jobs = {line: run.pop("retrain") for line, run in pending.items()}
    if "oracle" in jobs:  # retrained with each of ORACLE_SEEDS: the test accuracy is their mean
        cfg = jobs.pop("oracle")
        jobs.update({f"oracle@{s}": cfg.replace(seed=s) for s in ORACLE_SEEDS})
    jobs.update({line: TrainConfig.from_dict({**SINGLES[line], "epochs": args.max_epochs, "seed": seed})
                 for line in lines if line in SINGLES and line not in done})
    trained_all = trainings(jobs, fer)
    oracle = {k: v for k, v in trained_all.items() if k.startswith("oracle@")}
    if oracle:
        accs = [v["test_acc"] for v in oracle.values()]
        trained_all = {k: v for k, v in trained_all.items() if k not in oracle}
        trained_all["oracle"] = {"test_acc": sum(accs) / len(accs), "test_accs": accs,
                                 "wall_s": sum(v["wall_s"] for v in oracle.values())}
    for line, trained in trained_all.items():
        if line in pending:  # a search: its own figures, plus its winner's retrained test accuracy
            trained = {**pending[line], **{k: v for k, v in trained.items() if k.startswith("test_acc")},
                       "retrain_s": trained["wall_s"]}
        else:
            trained = {**trained, "load": round(os.getloadavg()[0], 2)}
        record({"preset": preset, "line": line, "seed": seed, **trained})


def stats(runs: list[dict[str, Any]]) -> dict[str, Any]:
    import numpy as np

    out: dict[str, Any] = {"n": len(runs), "seeds": [r["seed"] for r in runs]}
    for key in ("best_val_acc", "test_acc", "epochs", "wall_s"):
        v = np.array([r[key] for r in runs], dtype=float)
        out[key] = {"mean": round(float(v.mean()), 4), "std": round(float(v.std(ddof=1)) if len(v) > 1 else 0.0, 4)}
    if all("winner_recipe" in r for r in runs):
        out["recipe_winners"] = round(float(np.mean([r["winner_recipe"] for r in runs])), 3)
        out["winner_sources"] = [r.get("winner_source", "") for r in runs]
    return out


def floor_runs(lines: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Per seed, the warm-start point trained alone with the best validation accuracy (what a person
    could pick without the test split): the floor. Seeds missing a point are left out."""
    points = {k: {r["seed"]: r for r in v} for k, v in lines.items() if k.startswith("point:")}
    seeds = set.intersection(*(set(v) for v in points.values())) if len(points) == len(POINT_NAMES) else set()
    out = []
    for seed in sorted(seeds):
        name = max(points, key=lambda k: points[k][seed]["best_val_acc"])
        out.append({**points[name][seed], "line": "floor", "point": name})
    return out


def targets(per_seed: dict[str, dict[str, list[dict[str, Any]]]], budget: int) -> dict[str, Any]:
    """The mix sampler's targets per data set, from the mean retrained test accuracy over seeds: the mix
    sampler closes at least half the gap from the floor to the oracle and is >= 1 point above tpe;
    it never loses to tpe by more than 0.5 points; at most 40% of its winners are recipes; its
    epochs stay within 45% of trials x max epochs. Seeds are paired: only the seeds both lines ran."""
    import numpy as np

    out: dict[str, Any] = {}
    for preset, lines in per_seed.items():
        t: dict[str, Any] = {}
        floor = {r["seed"]: r["test_acc"] for r in lines.get("floor", [])}
        oracle = [r["test_acc"] for r in lines.get("oracle", [])]
        by_seed = {k: {r["seed"]: r for r in v} for k, v in lines.items()}
        if floor and oracle:
            t["headroom_points"] = round(100 * (oracle[0] - float(np.mean(list(floor.values())))), 1)
        for line in ("mix", "tpe", "random_asha", "random_fifo", "default"):
            if line not in by_seed:
                continue
            runs = by_seed[line]
            acc = float(np.mean([r["test_acc"] for r in runs.values()]))
            share = float(np.mean([r["epochs"] for r in runs.values()])) / budget
            lt: dict[str, Any] = {"test_acc": round(acc, 4), "seeds": sorted(runs), "epochs_share": round(share, 3)}
            if all("winner_recipe" in r for r in runs.values()):
                lt["recipe_winners"] = round(float(np.mean([r["winner_recipe"] for r in runs.values()])), 3)
            common = sorted(set(runs) & set(floor))
            if common and oracle:
                base = float(np.mean([floor[s] for s in common]))
                gap, closed = oracle[0] - base, float(np.mean([runs[s]["test_acc"] for s in common])) - base
                lt["gap_closed"] = round(closed / gap, 2) if gap > 0 else None
            if line == "mix":
                lt["targets"] = {"gap_closed >= 0.5": (lt["gap_closed"] >= 0.5) if lt.get("gap_closed") is not None
                                 else None,
                                 "recipe_winners <= 0.40": (lt["recipe_winners"] <= 0.40) if "recipe_winners" in lt
                                 else None,
                                 "epochs_share <= 0.45": share <= 0.45}
                paired = sorted(set(runs) & set(by_seed.get("tpe", {})))
                if paired:
                    diff = 100 * float(np.mean([runs[s]["test_acc"] - by_seed["tpe"][s]["test_acc"] for s in paired]))
                    worst = 100 * min(runs[s]["test_acc"] - by_seed["tpe"][s]["test_acc"] for s in paired)
                    lt["vs_tpe_points"] = {"mean": round(diff, 1), "worst_seed": round(worst, 1), "seeds": paired}
                    lt["targets"]["mean >= tpe + 1 point"] = diff >= 1.0
                    lt["targets"]["mean never below tpe by > 0.5"] = diff >= -0.5
            t[line] = lt
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
    return [r for r in runs if (r["max_epochs"], r["n"]) == (args.max_epochs, args.n)
            and r["trials"] == (args.oracle_trials if r["line"] == "oracle" else args.trials)]


def main(argv: list[str] | None = None) -> dict[str, Any]:


    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", nargs="+", default=["default", "hard"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--trials", type=int, default=16)
    ap.add_argument("--max-epochs", type=int, default=30)
    ap.add_argument("--n", type=int, default=2400, help="synthetic faces per data set")
    ap.add_argument("--oracle-trials", type=int, default=64, help="the oracle's random FIFO search: trials")
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
        trials = args.oracle_trials if run["line"] == "oracle" else args.trials
        run = {**run, "trials": trials, "max_epochs": args.max_epochs, "n": args.n}
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
    for lines in per_seed.values():
        if floor_runs(lines):
            lines["floor"] = floor_runs(lines)
    out = {"machine": {"host": platform.node(), "cpus": os.cpu_count(), "processor": platform.processor(),
                       "load_at_report": [round(x, 2) for x in os.getloadavg()]},
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
