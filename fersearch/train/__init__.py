"""Plain-PyTorch training: `fit(cfg, data)` trains one configuration; nothing here knows Ray,
run folders or the CLI."""

from .loop import FitResult, fit, predict_proba

__all__ = ["fit", "FitResult", "predict_proba"]
