"""fersearch: distributed hyperparameter search for facial-expression CNNs on FER2013.

The Python API mirrors the CLI:

    import fersearch
    data = fersearch.load_data()                    # FER2013 or the synthetic default
    result = fersearch.tune(trials=8)               # Ray Tune + Optuna TPE + ASHA
    print(result.trials.head(), result.best)
    ev = fersearch.evaluate(result.path)            # retrain the best, test-set metrics

Heavy modules (torch, ray) load on first use, so `import fersearch` is cheap.
Module names differ from the API names on purpose: importing a submodule
`fersearch.best` would shadow a function `fersearch.best`.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

from . import interrupts

if sys.argv[:1] == ["-m"] or sys.argv[0].rsplit("/", 1)[-1] == "fersearch":  # the CLI starting (python -m, script)
    interrupts.install(armed=False)  # a Ctrl+C while its modules import: exit 130, not a traceback

from .config import TrainConfig  # noqa: E402
from .errors import FersearchError  # noqa: E402

__version__ = "0.1.0"

_LAZY = {
    "load_data": ("fersearch.data.loader", "load"),
    "FerData": ("fersearch.data.fer", "FerData"),
    "build_model": ("fersearch.model", "build_model"),
    "fit": ("fersearch.train.loop", "fit"),
    "load_space": ("fersearch.search.spaces", "load_space"),
    "tune": ("fersearch.search.driver", "tune"),
    "best": ("fersearch.report.best", "best"),
    "evaluate": ("fersearch.report.evaluate", "evaluate"),
}

__all__ = ["TrainConfig", "FersearchError", "__version__", "predict", *_LAZY]


def predict(images: Any, model: Any = None, *, results: Any = None, tta: bool = False, detect: bool = True) -> list:
    """Emotion probabilities of every face in image files (or of a uint8 (N, 48, 48) array), as
    `fersearch predict`: `model` is a model.pt or model.onnx path or a loaded module; None takes the
    newest experiment's best/model.pt under `results` (default results/). detect=False: each image
    is one face already cropped. A photo with no face gives one Prediction with emotion None."""
    from .results.experiment import newest_best_model
    from .train.predict import predict as predict_images

    chosen = model if model is not None else newest_best_model(results)
    return predict_images(images, chosen, tta=tta, detect=detect)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'fersearch' has no attribute {name!r}")
