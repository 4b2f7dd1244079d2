"""Which Optuna sampler finds the best configuration in a short search: prints JSON.

Isolates the sampler: no Ray, no early stopping (FIFO), trials run one after another
with Optuna's ask/tell over the same space function the search uses, each told its
best val_acc (what fersearch ranks). Per sampler variant, data preset and seed: the
best val_acc, the trial that reached it, and every trial's curve (val_acc, val_loss per
epoch) so early-stopping rules can be replayed on them offline (bench_search.replay).

    python benchmarks/bench_sampler.py                     # 5 variants x 2 data sets x 3 seeds x 16 x 10: hours
    python benchmarks/bench_sampler.py --variants random --seeds 0 --presets hard --out curves.jsonl

Sequential ask/tell: constant_liar (on by default in Optuna 5) only matters when
trials run in parallel, so it is not a variant here. Budgets below 4,000 faces and 10
epochs tell nothing: at 2,000 faces and 4-5 epochs every trial of every variant sat at
the majority-class rate, on the hard preset and on the default data alike (measured).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {  # name -> (sampler, TPESampler overrides)
    "tpe": ("tpe", {}),  # fersearch's default: Optuna 5 TPE (multivariate), start-up = trials // 3
    "tpe-group": ("tpe", {"group": True}),  # multivariate per conditional block
    "tpe-independent": ("tpe", {"multivariate": False}),  # Optuna 4's default
    "tpe-startup10": ("tpe", {"n_startup_trials": 10}),  # Optuna's own default start-up
    "random": ("random", {}),
}


def run_search(data: Any, variant: str, seed: int, trials: int, epochs: int, space: Any,
               warm: bool = False, threads: int = 1) -> dict[str, Any]:
    """One FIFO search with `variant`'s sampler: every trial trained to `epochs`, told its best val_acc."""
    import optuna

    from fersearch.config import TrainConfig
    from fersearch.search.spaces import call_space, quiet_optuna
    from fersearch.search.study import make_sampler
    from fersearch.train import fit

    kind, tpe = VARIANTS[variant]
    base = TrainConfig().replace(seed=seed)
    with quiet_optuna():
        study = optuna.create_study(direction="maximize", sampler=make_sampler(kind, seed, trials, **tpe))
        for point in space.points if warm else ():
            study.enqueue_trial(dict(point))
        out, t0 = [], time.time()
        for _ in range(trials):
            trial = study.ask()
            ret = call_space(space.fn, trial)
            params = {**trial.params, **(ret or {})}
            cfg = TrainConfig.from_dict({**params, "epochs": epochs}, base=base)
            hist = fit(cfg, data, threads=threads).history
            accs = [h["val_acc"] for h in hist]
            study.tell(trial, max(accs))
            print(f"  {variant} seed {seed} trial {trial.number}: best {max(accs):.4f}", file=sys.stderr, flush=True)
            out.append({"number": trial.number, "params": params, "best_val_acc": max(accs), "val_acc": accs,
                        "val_loss": [h["val_loss"] for h in hist],
                        "enqueued": warm and trial.number < len(space.points)})
    best = max(out, key=lambda t: t["best_val_acc"])
    return {"variant": variant, "seed": seed, "trials": trials, "epochs": epochs, "best_val_acc": best["best_val_acc"],
            "best_trial": best["number"], "wall_s": round(time.time() - t0, 1), "curves": out}


def main(argv: list[str] | None = None) -> None:
    import numpy as np

    from fersearch.data.synth import synthetic_data
    from fersearch.search.spaces import load_space

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--presets", nargs="+", default=["default", "hard"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--trials", type=int, default=16)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--n", type=int, default=4000, help="synthetic faces per data set")
    ap.add_argument("--warm", action="store_true", help="evaluate the space's warm-start points first")
    ap.add_argument("--space", default="wide")
    ap.add_argument("--out", help="also append each search's JSON line here as it ends")
    args = ap.parse_args(argv)
    space = load_space(args.space)
    runs = []
    for preset in args.presets:
        data = synthetic_data(args.n, 0, preset)
        for seed in args.seeds:
            for variant in args.variants:
                run = {"preset": preset, "n": args.n, **run_search(data, variant, seed, args.trials, args.epochs,
                                                                    space, warm=args.warm)}
                runs.append(run)
                print(f"{preset} seed {seed} {variant}: best {run['best_val_acc']:.4f} ({run['wall_s']} s)",
                      file=sys.stderr)
                if args.out:
                    with open(args.out, "a") as f:
                        f.write(json.dumps(run) + "\n")
    summary = {}
    for preset in args.presets:
        for variant in args.variants:
            best = [r["best_val_acc"] for r in runs if r["preset"] == preset and r["variant"] == variant]
            summary[f"{preset}/{variant}"] = {"mean": float(np.mean(best)), "std": float(np.std(best)), "runs": best}
    print(json.dumps({"args": vars(args), "summary": summary}, indent=2))


if __name__ == "__main__":
    main()
