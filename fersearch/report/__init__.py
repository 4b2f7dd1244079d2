"""After a search: the best trial, its retrain and evaluation, and every report file.

    best.py      BestTrial, best(): the winner, judged by each trial's best val_acc
    analysis.py  ranking, boundary check, diverged trials, ASHA rungs, seed trial, importance
    evaluate.py  Evaluation, evaluate(): retrain, evaluate once, swap in results/<name>/best/
    bestdir.py   the files of best/ (config, metrics, model, plots, pages, provenance)
    metrics.py   metrics.json, the classification report, predictions, seed statistics
    plots.py     the five plots
    pages.py     report.html and report.md
    console.py   what the CLI prints
    run.py       the run folder of `fersearch train`
"""
