"""How a search space's `space(trial)` function travels and is called.

Ray pickles the searcher, with the space function inside it, to save a search and to
resume it. A function from a space file is carried by its source (`SpaceFunction`), one
from a notebook or script by value (`PickledFunction`, cloudpickle). Either is called
through `call_space`, which hands the function a trial whose step-grid floats come back
as written and whose suggest calls are named in errors.
"""

from __future__ import annotations

import hashlib
import sys
import types
from collections.abc import Callable
from typing import Any

from ..fmt import first_line


class SpaceFunction:
    """The file's `space` function in a form that pickles by source, not by module.

    Ray pickles the searcher (with plain `pickle`) to save and restore its state; a
    function from a file loaded at run time cannot be pickled by reference, so this
    carries the source and re-executes it wherever it is unpickled.
    """

    def __init__(self, path: str, source: str):
        self.path = path
        self.source = source
        self._fn: Callable | None = None

    def __getstate__(self) -> dict:
        return {"path": self.path, "source": self.source}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["path"], state["source"])  # type: ignore[misc]  # unpickling: this class's own

    def module(self) -> types.ModuleType:
        name = "fersearch_space_" + hashlib.sha256(self.source.encode()).hexdigest()[:12]
        mod = types.ModuleType(name)
        mod.__file__ = self.path
        # Registered so dataclasses/pickle inside the space file can find their module.
        sys.modules[name] = mod
        exec(compile(self.source, self.path, "exec"), mod.__dict__)
        return mod

    def __call__(self, trial: Any) -> dict | None:
        if self._fn is None:
            self._fn = self.module().space
        return call_space(self._fn, trial)


class _TidyTrial:
    """The trial a space function sees: Optuna's, except that a float on a step grid comes
    back as written (0.35, not Optuna's 0.35000000000000003) and is remembered, and a range
    Optuna rejects (low > high, log with low <= 0) names the suggest call it came from."""

    def __init__(self, trial: Any):
        self._trial = trial
        self.tidied: dict[str, float] = {}

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._trial, name)
        return _naming_call(name, attr) if name.startswith("suggest_") else attr

    def suggest_float(self, name: str, low: float, high: float, *, step: float | None = None,
                      log: bool = False) -> float:
        value = _naming_call("suggest_float", self._trial.suggest_float)(name, low, high, step=step, log=log)
        if step is not None:
            value = self.tidied[name] = float(f"{value:.12g}")
        return value


def _naming_call(method: str, suggest: Callable) -> Callable:
    """`suggest`, with Optuna's ValueError for a bad range led by the call that made it."""
    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return suggest(*args, **kwargs)
        except ValueError as e:
            shown = ", ".join([*map(repr, args), *(f"{k}={v!r}" for k, v in kwargs.items() if v not in (None, False))])
            raise ValueError(f"trial.{method}({shown}): {first_line(e)}") from None
    return call


def call_space(fn: Callable, trial: Any) -> Any:
    """`fn(trial)`, with step-grid floats tidied in what it returns: a define-by-run function's
    dict is merged over the trial's suggested values, so the tidied values are the config."""
    tidy = _TidyTrial(trial)
    ret = fn(tidy)
    if ret is None:
        return dict(tidy.tidied) or None
    if isinstance(ret, dict):
        return {**tidy.tidied, **ret}
    return ret


class PickledFunction:
    """A user's own `space(trial)` function (a notebook, a script) carried by value.

    cloudpickle stores the code, closures and globals of a function defined in a
    notebook or `__main__` (one from an importable module by reference), so Ray can
    save the searcher with plain `pickle` and a resumed search can call it in a new process.
    """

    def __init__(self, fn: Callable):
        self._fn = fn

    def __getstate__(self) -> dict:
        from ray import cloudpickle  # Ray's own copy: by value, closures and globals included

        return {"blob": cloudpickle.dumps(self._fn)}

    def __setstate__(self, state: dict) -> None:
        import pickle

        self._fn = pickle.loads(state["blob"])

    def __call__(self, trial: Any) -> dict | None:
        return call_space(self._fn, trial)
