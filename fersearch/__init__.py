"""fersearch: distributed hyperparameter search for facial-expression CNNs on FER2013.

The Python API mirrors the CLI; heavy modules (torch, ray) load on first use.
"""

from __future__ import annotations

__version__ = "0.1.0"

from .config import TrainConfig  # noqa: E402  (light: no torch import)
from .errors import FersearchError  # noqa: E402

__all__ = ["TrainConfig", "FersearchError", "__version__"]
