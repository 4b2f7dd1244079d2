"""`fersearch tune`: Ray Tune + Optuna + ASHA over a search space (orchestration in driver.py).

Imports nothing heavy: the CLI reads search.options to build `fersearch tune --help`.
"""

from typing import Any

__all__ = ["tune", "SearchResult"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import driver

        return getattr(driver, name)
    raise AttributeError(f"module 'fersearch.search' has no attribute {name!r}")
