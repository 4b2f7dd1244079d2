"""`fersearch tune`: Ray Tune + Optuna + ASHA over a search space (see driver.py)."""

from .driver import SearchResult, tune

__all__ = ["tune", "SearchResult"]
