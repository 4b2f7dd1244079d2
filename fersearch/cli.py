"""The `fersearch` command line: thin typer commands over the Python API.

Library code raises FersearchError; only the commands' group (commands/common.py) turns it
into a one-line `error: ...` on stderr and exit code 1. Heavy imports (torch, ray) happen
inside commands so `fersearch --help` stays fast. `fersearch data ...` is commands/data.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Optional

import typer

from . import interrupts
from .commands.common import DataOpt, Group, JsonOpt, QuietOpt
from .commands.data import data_app
from .search.options import Sampler, Scheduler, SearchOptions

app = typer.Typer(
    cls=Group,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    help="Distributed hyperparameter search for facial-expression CNNs on FER2013.",
)
app.add_typer(data_app, name="data")

_TUNE = SearchOptions()  # `tune`'s defaults: SearchOptions' own


@app.callback()
def _main() -> None:
    """Distributed hyperparameter search for facial-expression CNNs on FER2013."""


@app.command("train")
def train_cmd(
    data: DataOpt = None,
    set_: Annotated[Optional[list[str]], typer.Option(
        "--set", help="Override one config key, e.g. --set lr=3e-4 --set filters=32,64,128 --set hflip=true "
        "(repeatable; keys as in a run's config.json, per-block also filters_N / dropout_N).",
        show_default=False)] = None,
    config: Annotated[Optional[Path], typer.Option(
        "--config", help="JSON file of config keys (e.g. a run's config.json); --set overrides it.",
        show_default=False)] = None,
    epochs: Annotated[Optional[int], typer.Option(
        "--epochs", help="Maximum epochs (default 30); early stopping on val_acc may end sooner.",
        show_default=False)] = None,
    seed: Annotated[Optional[int], typer.Option("--seed", help="Seed of weights, batches and augmentation (default 0).",
                                                show_default=False)] = None,
    out: Annotated[Optional[Path], typer.Option(
        "--out", help="Run directory (default: results/train-<YYYYmmdd-HHMMSS>/).", show_default=False)] = None,
    threads: Annotated[Optional[int], typer.Option("--threads", min=1, help="CPU threads for torch (default: torch's).",
                                                   show_default=False)] = None,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Train one configuration (the seed CNN unless --set/--config change it).

    Writes config.json, history.csv, model.pt and fersearch.json to --out and prints a summary."""
    from .config import parse_set
    from .data import load
    from .io import command_line
    from .outputs import json_text
    from .report.run import format_summary, resolve_config, train_to_dir

    cfg = resolve_config(config, parse_set(set_), epochs=epochs, seed=seed)  # config mistakes before any data
    summary = train_to_dir(cfg, load(data, quiet=quiet), out, command=command_line(), threads=threads,
                           progress=not (json_out or quiet))
    typer.echo(json_text(summary) if json_out else format_summary(summary))


@app.command("tune")
def tune_cmd(
    space: Annotated[Optional[str], typer.Option(
        "--space", show_default=False,
        help="Search space: a .py file or a name from `fersearch spaces` (default: wide, which found "
             "better models than seed per trial and per minute on the default data).")] = None,
    data: DataOpt = None,
    trials: Annotated[int, typer.Option(
        "--trials",
        help="Configurations to try (Optuna proposals).")] = _TUNE.trials,
    gpus: Annotated[Optional[int], typer.Option(
        "--gpus", show_default=False,
        help="GPUs the search may use (default: all the Ray cluster has; none = CPUs).")] = None,
    gpus_per_trial: Annotated[Optional[float], typer.Option(
        "--gpus-per-trial", show_default=False,
        help="GPU share per trial, at most 1; fractions pack several small CNNs on one GPU (default: 0.25 "
             "with GPUs; raised so that the trials at once spread over every GPU).")] = None,
    cpus_per_trial: Annotated[Optional[float], typer.Option(
        "--cpus-per-trial", show_default=False,
        help="CPU share per trial (fractions allowed); its torch thread count is the whole part, at least "
             "1 (default: 1).")] = None,
    max_epochs: Annotated[int, typer.Option(
        "--max-epochs",
        help="Epochs a trial may train at most (ASHA's max_t).")] = _TUNE.max_epochs,
    checkpoint_every: Annotated[int, typer.Option(
        "--checkpoint-every",
        help="Epochs between a trial's checkpoints (also at ASHA's rungs and its last epoch); a crashed "
             "trial is retried from its last one, so a crash costs it up to N-1 epochs.")] = _TUNE.checkpoint_every,
    grace_period: Annotated[Optional[int], typer.Option(
        "--grace-period", show_default=False,
        help="Epochs every trial gets before ASHA may stop it (default: max-epochs/6, >= 1).")] = None,
    reduction_factor: Annotated[float, typer.Option(
        "--reduction-factor",
        help="ASHA keeps the best 1/R of trials at each rung.")] = _TUNE.reduction_factor,
    scheduler: Annotated[Scheduler, typer.Option(
        "--scheduler",
        help="asha (stop trials clearly below the others at a rung, beyond the noise of the validation "
             "split, on val_acc or, where val_acc ties, on val_loss; decisions in scheduler.jsonl) or fifo "
             "(run all to the end).")] = _TUNE.scheduler,
    sampler: Annotated[Sampler, typer.Option(
        "--sampler",
        help="mix (mutations of the best trial so far, the warm-start recipes' neighbourhood early on, TPE "
             "for the rest; each trial's source in trials.csv), tpe (Optuna TPE alone) or random; all "
             "seeded.")] = _TUNE.sampler,
    objectives: Annotated[str, typer.Option(
        "--objectives",
        help="What the sampler optimises: val_acc, or val_acc,latency (accuracy up and batch-1 CPU latency "
             "down together: Optuna keeps a Pareto front; ASHA still stops trials on val_acc).")] = _TUNE.objectives,
    seed: Annotated[int, typer.Option(
        "--seed",
        help="Seed of the sampler and of every trial's training.")] = _TUNE.seed,
    name: Annotated[Optional[str], typer.Option(
        "--name", show_default=False,
        help="Experiment name under --results (default: <space>-<timestamp>).")] = None,
    results: Annotated[Optional[str], typer.Option(
        "--results", show_default=False,
        help="Where experiments go (default: results/). With --address: a path every node shares, or a URI "
             "Ray accepts (s3://, gs://, file://).")] = None,
    address: Annotated[Optional[str], typer.Option(
        "--address", show_default=False,
        help="Join an existing Ray cluster (auto or host:port) instead of starting a local one.")] = None,
    resume: Annotated[bool, typer.Option(
        "--resume",
        help="Continue the interrupted search --name: finished trials stay, the rest run; space, trials, "
             "epochs and ASHA settings come from the original search.")] = False,
    dashboard_host: Annotated[str, typer.Option(
        "--dashboard-host",
        help="Interface the local Ray dashboard binds to (warns unless loopback).")] = _TUNE.dashboard_host,
    dashboard_port: Annotated[Optional[int], typer.Option(
        "--dashboard-port", show_default=False,
        help="Port of the local Ray dashboard (default: Ray's, 8265).")] = None,
    mlflow: Annotated[bool, typer.Option(
        "--mlflow", show_default=False,
        help="Track the search in MLflow (a parent run, a child run per trial) in a local store, "
             "sqlite:///results/<name>/mlflow.db. Needs fersearch[mlflow].")] = False,
    mlflow_uri: Annotated[Optional[str], typer.Option(
        "--mlflow-uri", show_default=False,
        help="Track the search in this MLflow tracking store instead (http://host:5000, sqlite:///file.db; "
             "implies --mlflow).")] = None,
    quiet: Annotated[bool, typer.Option(
        "--quiet", "-q", show_default=False,
        help="No live view; print only the summary.")] = False,
) -> None:
    """Search hyperparameters with Ray Tune, Optuna (mix sampler) and ASHA; results in results/<name>/."""
    from .search.driver import tune

    result = tune(SearchOptions(
        space=space, data=data, trials=trials, gpus=gpus, gpus_per_trial=gpus_per_trial,
        cpus_per_trial=cpus_per_trial, max_epochs=max_epochs, checkpoint_every=checkpoint_every,
        grace_period=grace_period, reduction_factor=reduction_factor, scheduler=scheduler, sampler=sampler,
        objectives=objectives, seed=seed, name=name, results=results, address=address, resume=resume,
        dashboard_host=dashboard_host, dashboard_port=dashboard_port, mlflow=mlflow, mlflow_uri=mlflow_uri,
        verbose=not quiet))
    for line in result.summary():
        typer.echo(line)
    if result.best and not result.interrupted:  # the rules live in report/ (search/ cannot import it)
        from .report.best import best
        from .report.console import closing_lines

        for line in closing_lines(best(result.path)):
            typer.echo(line)
    if result.interrupted:
        raise typer.Exit(130)  # interrupted: scripts (and `make demo`) must not go on as if it had finished


@app.command("spaces")
def spaces_cmd(
    directory: Annotated[Optional[Path], typer.Argument(
        help="Folder of space files (default: ./search_spaces, else the ones shipped with fersearch).",
        show_default=False)] = None,
    check: Annotated[bool, typer.Option("--check", help="Also load and check each space (as `tune` does).")] = False,
    json_out: JsonOpt = False,
) -> None:
    """List the search spaces with their docstring summaries."""
    from .outputs import json_text
    from .search.spaces import check_spaces, format_spaces, list_spaces

    spaces = check_spaces(directory) if check else list_spaces(directory)
    typer.echo(json_text(spaces) if json_out else format_spaces(spaces, directory, check))


@app.command("status")
def status_cmd(
    experiment: Annotated[Optional[str], typer.Argument(
        help="Experiment name under --results, or its path. Default: the most recent one.",
        show_default=False)] = None,
    results: Annotated[Optional[Path], typer.Option(
        "--results", help="Directory holding the experiments (default: results/).", show_default=False)] = None,
    json_out: JsonOpt = False,
) -> None:
    """Summarise a running or finished search: counts by status, the best trial, a per-trial table.

    Reads only the experiment directory, so it works while a search runs, after it ends or is interrupted."""
    import shutil
    import sys

    from .outputs import json_text
    from .results.experiment import resolve_experiment
    from .results.status import experiment_status, format_status

    st = experiment_status(resolve_experiment(experiment, results))
    if json_out:
        typer.echo(json_text(st))
    else:
        width = shutil.get_terminal_size((0, 0)).columns if sys.stdout.isatty() else None
        typer.echo(format_status(st, width or None))


_ExperimentsDirOpt = Annotated[
    Optional[Path], typer.Option("--results", help="Directory holding the experiments (default: results/).")
]


@app.command("best")
def best_cmd(
    ctx: typer.Context,
    experiment: Annotated[
        Optional[str],
        typer.Argument(help="Experiment name under --results, or its path. Default: the most recent one."),
    ] = None,
    evaluate: Annotated[
        bool, typer.Option("--evaluate", help="Retrain the best configuration from scratch and evaluate it on the "
                           "test split; writes results/<name>/best/ (metrics, plots, model, report.html).")
    ] = False,
    epochs: Annotated[
        Optional[int], typer.Option("--epochs", help="Epoch budget of the retrain (default: the search's "
                                    "--max-epochs); early stopping on validation still applies.")
    ] = None,
    seeds: Annotated[
        int, typer.Option("--seeds", help="Retrain K times with different seeds, report mean ± std and keep "
                          "the best-validation model.")
    ] = 1,
    ties: Annotated[int, typer.Option("--ties", help="With --evaluate: retrain up to K configurations tied with "
                                      "the best (within validation noise), max(--seeds, 2) seeds each, and keep the "
                                      "highest mean val_acc; 1 (default): the best alone.")
                    ] = 1,  # tiebreak.DEFAULT_TIES
    tta: Annotated[bool, typer.Option("--tta", help="Also report horizontal-flip test-time augmentation.")] = False,
    split: Annotated[
        Literal["test", "val"], typer.Option("--split", help="Split to evaluate on: test (PrivateTest) or val (when "
                                             "the data has no test labels, e.g. Kaggle test.csv).")
    ] = "test",
    max_latency_ms: Annotated[
        Optional[float], typer.Option("--max-latency-ms", help="Pick the most accurate trial whose model runs "
                                      "within this many ms (batch 1, 1 CPU thread, ONNX Runtime); --evaluate "
                                      "retrains that one.", show_default=False)
    ] = None,
    results: _ExperimentsDirOpt = None,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Show the best trial of a search; with --evaluate, retrain it and evaluate it on the test split.

    Best = highest best-epoch validation accuracy; --evaluate writes results/<name>/best/."""
    from .outputs import json_text
    from .report import pareto
    from .report.best import best
    from .report.console import format_best, format_evaluation

    if not evaluate:
        from .report.evaluate import EVALUATE_ONLY, refuse_without_evaluate

        # flags typed, not defaults: each one means nothing without --evaluate
        given = [n for n in EVALUATE_ONLY if getattr(ctx.get_parameter_source(n), "name", "DEFAULT") != "DEFAULT"]
        refuse_without_evaluate(given)
        bt = best(experiment, results=results, max_latency_ms=max_latency_ms)
        typer.echo(json_text(pareto.best_dict(bt, max_latency_ms)) if json_out
                   else pareto.format_best_and_front(bt, max_latency_ms))
        return
    from .report import evaluate as evaluation

    log = (lambda msg: None) if quiet else (lambda msg: typer.echo(msg, err=True))
    # evaluate() checks the flags, then the winner and its data (changed, unlabelled: one line) before training
    ev = evaluation.evaluate(experiment, results=results, max_latency_ms=max_latency_ms, epochs=epochs, seeds=seeds,
                             tta=tta, split=split, ties=ties, progress=not (json_out or quiet), log=log,
                             ready=None if json_out or quiet else lambda bt: typer.echo(format_best(bt) + "\n",
                                                                                        err=True))
    from .search.tracking import log_evaluation

    # a search run with --mlflow: onto its parent run
    tracked = log_evaluation(ev.best.experiment, ev.best.record, ev.metrics, ev.best.trial_id, ev.out_dir)
    if tracked:
        typer.echo(tracked, err=True)
    typer.echo(json_text(ev.to_dict()) if json_out else format_evaluation(ev))


@app.command("compare")
def compare_cmd(
    experiments: Annotated[list[str], typer.Argument(help="Two or more searches: names under --results, or paths.")],
    out: Annotated[Optional[Path], typer.Option("--out", help="Also plot best val_acc so far against epochs "
                                                "trained, a line per search, to this PNG.")] = None,
    results: _ExperimentsDirOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Searches side by side: data, space, sampler, scheduler, trials, epochs, wall time, best val_acc, test acc."""
    from .outputs import json_text
    from .report.compare import compare, format_table, plot, to_dict

    if out is not None:
        from .outputs import PLOT_SUFFIXES, check_output

        check_output(out, "--out", PLOT_SUFFIXES)  # before any reading: never inside an experiment, a folder, /proc
    rows, warnings = compare(experiments, results)
    if out is not None:
        plot(rows, out)
    if json_out:
        typer.echo(json_text(to_dict(rows, warnings)))
        return
    typer.echo(format_table(rows))
    for line in warnings:
        typer.echo(line, err=True)
    if out is not None:
        typer.echo(f"plot: {out}")


NO_FACE_EXIT = 3  # some image had no face: not an error of fersearch's, not a full success either


@app.command("predict")
def predict_cmd(
    images: Annotated[list[Path], typer.Argument(help="Image files (png, jpg, ...; any size or colour): photos "
                                                 "(every face is found and classified) or cropped faces.")],
    model: Annotated[
        Optional[Path], typer.Option("--model", help="A model.pt or model.onnx written by fersearch (default: the "
                                     "newest experiment's best/model.pt). A .onnx runs in ONNX Runtime.")
    ] = None,
    no_detect: Annotated[bool, typer.Option(
        "--no-detect", help="Take each image as one face already cropped (centre square, resized to 48x48) "
        "instead of finding faces. A 48x48 image is always taken as a crop.")] = False,
    annotate: Annotated[Optional[Path], typer.Option(
        "--annotate", help="Write the image with each face's box and emotion drawn on it (.png or .jpg; one "
        "image only).", show_default=False)] = None,
    results: _ExperimentsDirOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Predict the emotion of every face in each image (found with OpenCV's Haar cascade, cropped as
    FER2013's faces were, 48x48 grayscale). Exit code 3 when some image has no face."""
    from .outputs import json_text
    from .report import console as report
    from .results.experiment import newest_best_model
    from .train.predict import predict

    if annotate is not None:
        from .train.faces import annotate_predictions, check_annotate

        check_annotate(images, annotate)  # a flag mistake: before any model is read
    path = model if model is not None else newest_best_model(results)
    preds = predict(images, path, detect=not no_detect)
    if annotate is not None:
        annotate_predictions(images[0], preds, annotate)
    faceless = [p.image for p in preds if p.emotion is None]
    if json_out:
        typer.echo(json_text({"model": str(path), "predictions": [p.to_dict() for p in preds if p.emotion],
                               "no_face": faceless}))
    else:
        typer.echo(f"model: {path}", err=True)
        table = report.format_predictions(preds)
        if table:
            typer.echo(table)
        if annotate is not None:
            typer.echo(f"wrote {annotate}", err=True)
    for image in faceless:
        typer.echo(f"{image}: no face found; pass --no-detect if it is a face already cropped", err=True)
    if faceless:
        raise typer.Exit(NO_FACE_EXIT)


def main() -> None:
    try:
        interrupts.install()  # Ctrl+C always stops a command (interrupts.py); one during start-up: 130 now
        app()
    except KeyboardInterrupt:  # one that landed outside a command (parsing, exit): the same 130, no traceback
        interrupts.stopped()
        raise SystemExit(interrupts.EXIT_CODE) from None
