"""Plain-PyTorch training: `fit(cfg, data)` trains one configuration; nothing here knows Ray,
run folders or the CLI.

    device.py   device, precision, autocast, seeding, the device's own clock
    augment.py  batched augmentation on tensors
    recipe.py   data on the device, class weights, the loss, optimiser and schedule
    graphs.py   the training step and evaluation as captured CUDA graphs
    loop.py     fit, FitResult: the loop, early stopping, exact resume
    snapshot.py a run's saved state: portable tensors, what a resume may change
    progress.py the per-epoch progress on stderr (rich on a terminal)
    predict.py  predict_proba, score, image loading, predict(images, model)
"""

from .loop import FitResult, fit
from .predict import predict_proba, score

__all__ = ["fit", "FitResult", "predict_proba", "score"]
