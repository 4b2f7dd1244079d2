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
from typing import Any

from .config import TrainConfig
from .errors import FersearchError

__version__ = "0.1.0"

_LAZY = {
    "load_data": ("fersearch.data.loader", "load"),
    "FerData": ("fersearch.data.loader", "FerData"),
    "build_model": ("fersearch.model", "build_model"),
    "fit": ("fersearch.train.loop", "fit"),
    "load_space": ("fersearch.search.spaces", "load_space"),
    "tune": ("fersearch.search.driver", "tune"),
    "best": ("fersearch.report.retrain", "best"),
    "evaluate": ("fersearch.report.retrain", "evaluate"),
    "predict": ("fersearch.train.predict", "predict"),
}

__all__ = ["TrainConfig", "FersearchError", "__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'fersearch' has no attribute {name!r}")
