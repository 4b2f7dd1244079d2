"""Search spaces: load a `search_spaces/<name>.py` file and check it before Ray starts.

A space file defines `space(trial) -> dict | None`, an Optuna define-by-run
function: it calls `trial.suggest_*` with flat TrainConfig names (`filters_1`,
`dropout_2`, `lr`, ...) and may return a dict of constants (or of values derived
from the suggestions). The trial's config is the suggestions updated by the
returned dict, which is what `ray.tune.search.optuna.OptunaSearch` hands a trial.
Optionally the file defines `points`: parameter dicts enqueued as the first trials
(e.g. the seed configuration).

`load_space` runs the function against a throwaway in-memory study before any
search: random asks, then every categorical choice and both ends of every
numeric range (forced with `enqueue_trial`, so the space's own conditional logic
still applies), each resolved through `TrainConfig.from_dict`. A space that can
propose an invalid configuration fails here with one line naming the file.
"""

from __future__ import annotations

import ast
import hashlib
import inspect
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import TrainConfig
from ..errors import ConfigError, SpaceError
from ..fmt import first_line
from ..results.study import quiet_optuna
from .space_fn import PickledFunction, SpaceFunction, call_space  # noqa: F401 (call_space: API)

SPACES_DIR = "search_spaces"
# Measured on the default data (benchmarks/bench_tune.py, 8 trials, 30 max epochs, ASHA,
# 2 idle cores): wide found val_acc 0.755 in 266 s, seed 0.725 in 239 s; wide leads from
# the second minute on (0.817 vs 0.759 on the earlier 6,000-face default). Batch norm and
# input standardisation get past the seed recipe's majority-class plateau in 1-2 epochs.
DEFAULT_SPACE = "wide"
RANDOM_ASKS = 8  # random proposals checked per space, on top of the range endpoints
# The shipped spaces: inside the package in a built wheel (pyproject maps search_spaces/ to
# fersearch/search_spaces), beside it in a checkout or an editable install.
_PACKAGE = Path(__file__).resolve().parents[1]  # fersearch/
_PACKAGED_DIR = _PACKAGE / SPACES_DIR if (_PACKAGE / SPACES_DIR).is_dir() else _PACKAGE.parent / SPACES_DIR


def default_spaces_dir() -> Path:
    """./search_spaces if the cwd has one (a user's own spaces), else the shipped ones."""
    local = Path(SPACES_DIR)
    return local if local.is_dir() else _PACKAGED_DIR


def resolve_space_path(space: str | Path | None = None) -> Path:
    """A path to a .py file, or a bare name (`seed`, `wide`) looked up in the spaces dir."""
    if space is None or str(space) == "":
        space = DEFAULT_SPACE
    p = Path(space).expanduser()
    if p.suffix == ".py" or p.parent != Path("."):
        return p
    for d in dict.fromkeys((default_spaces_dir(), _PACKAGED_DIR)):
        if (d / f"{p.name}.py").is_file():
            return d / f"{p.name}.py"
    return default_spaces_dir() / f"{p.name}.py"


@dataclass(frozen=True)
class Space:
    name: str
    path: Path
    source: str
    sha256: str
    summary: str
    fn: SpaceFunction | PickledFunction
    points: tuple[dict, ...] = ()  # parameter dicts to evaluate first
    params: tuple[str, ...] = ()  # names seen as trial.suggest_* parameters in the check
    constants: tuple[str, ...] = field(default=())  # keys only ever returned, never suggested

    def record(self) -> dict[str, str]:
        """What fersearch.json stores about the space."""
        return {"path": str(self.path), "name": self.name, "source": self.source, "sha256": self.sha256}


def load_space(space: str | Path | None = None, base: TrainConfig | None = None) -> Space:
    """Load and check a search-space file; SpaceError (one line) if it cannot be searched."""
    path = resolve_space_path(space)
    where = str(path)
    if not path.is_file():
        avail = ", ".join(s["name"] for s in list_spaces()) or "none"
        raise SpaceError(f"search space {where} not found; pass a .py file or one of: {avail}")
    try:
        source = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise SpaceError(f"{where}: cannot read ({e})") from None
    try:
        tree = ast.parse(source, filename=where)
    except SyntaxError as e:
        raise SpaceError(f"{where}:{e.lineno}: syntax error: {e.msg}; fix the file") from None
    fn = SpaceFunction(str(path), source)
    try:
        mod = fn.module()
    except Exception as e:  # a user's file: any error while importing it is theirs
        raise SpaceError(f"{where}: importing it raised {type(e).__name__}: {first_line(e)}") from None
    if not callable(getattr(mod, "space", None)):
        raise SpaceError(f"{where}: defines no `space(trial)` function; add `def space(trial): ...` returning a dict")
    points = getattr(mod, "points", ())
    if not isinstance(points, (list, tuple)) or not all(isinstance(p, dict) for p in points):
        raise SpaceError(f"{where}: `points` must be a list of parameter dicts, e.g. [{{'filters_1': 32}}]")
    params, constants = _check(where, fn, [dict(p) for p in points], base or TrainConfig())
    return Space(
        name=path.stem,
        path=path,
        source=source,
        sha256=hashlib.sha256(source.encode()).hexdigest(),
        summary=_summary(ast.get_docstring(tree)),
        fn=fn,
        points=tuple(dict(p) for p in points),
        params=tuple(sorted(params)),
        constants=tuple(sorted(constants)),
    )


def space_from_function(fn: Callable, points: list[dict] | tuple = (), name: str | None = None,
                        base: TrainConfig | None = None) -> Space:
    """A Space from a Python function `fn(trial) -> dict | None`, checked like a file.

    For the Python API: `fersearch.tune(space=my_space, ...)`. The record keeps the
    function's source when Python can find it (not for functions typed into a REPL).
    """
    if not callable(fn):
        raise SpaceError(f"space {fn!r} is not callable; pass a function space(trial) -> dict")
    name = str(name or getattr(fn, "__name__", None) or "space")
    where = f"space function {name!r}"
    try:
        source = textwrap.dedent(inspect.getsource(fn))
    except (OSError, TypeError):
        source = ""
    wrapped = PickledFunction(fn)
    points = [dict(p) for p in (points or getattr(fn, "points", ()))]
    params, constants = _check(where, wrapped, points, base or TrainConfig())
    doc = inspect.getdoc(fn)
    path = Path(inspect.getsourcefile(fn) or "<function>") if source else Path("<function>")
    identity = source or repr(sorted(params))
    return Space(name=name, path=path, source=source, sha256=hashlib.sha256(identity.encode()).hexdigest(),
                 summary=_summary(doc), fn=wrapped, points=tuple(points), params=tuple(sorted(params)),
                 constants=tuple(sorted(constants)))


def list_spaces(directory: str | Path | None = None) -> list[dict[str, str]]:
    """name, path and docstring summary of every space file in a directory (no checks run)."""
    d = Path(directory) if directory is not None else default_spaces_dir()
    out = []
    for p in sorted(d.glob("*.py")) if d.is_dir() else []:
        if p.name.startswith("_"):
            continue
        try:
            summary = _summary(ast.get_docstring(ast.parse(p.read_text())))
        except (SyntaxError, OSError, UnicodeDecodeError):
            summary = "(does not parse)"
        out.append({"name": p.stem, "path": str(p), "summary": summary})
    return out


def check_spaces(directory: str | Path | None = None) -> list[dict[str, str]]:
    """list_spaces plus `check`: "ok" or the one-line problem load_space finds."""
    out = []
    for entry in list_spaces(directory):
        try:
            load_space(entry["path"])
            entry = {**entry, "check": "ok"}
        except SpaceError as e:
            entry = {**entry, "check": str(e)}
        out.append(entry)
    return out


# ------------------------------------------------------------------ checking
def _check(where: str, fn: Callable, points: list[dict], base: TrainConfig) -> tuple[set[str], set[str]]:
    """Ask the space for configurations and resolve each one; returns (params, constants)."""
    import optuna

    with quiet_optuna():
        study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
        params: set[str] = set()
        returned: set[str] = set()
        # every distinct range of each parameter (a range may depend on earlier parameters),
        # with the parameters suggested before it when it was seen
        ranges: dict[tuple[str, str], tuple[Any, dict]] = {}

        def ask(what: str, fixed: dict | None = None, strict: bool = False) -> None:
            if fixed is not None:
                study.enqueue_trial(fixed, skip_if_exists=False)
            trial = study.ask()
            try:
                ret = fn(trial)
            except Exception as e:  # the user's code or Optuna rejecting a range
                raise SpaceError(f"{where}: space(trial) raised {type(e).__name__} ({what}): {first_line(e)}") from None
            if ret is not None and not (isinstance(ret, dict) and all(isinstance(k, str) for k in ret)):
                raise SpaceError(f"{where}: space(trial) must return a dict with str keys or None, "
                                 f"got {type(ret).__name__}")
            if strict and fixed is not None:
                unknown = sorted(set(fixed) - set(trial.params))
                if unknown:
                    raise SpaceError(f"{where}: {what} sets {', '.join(unknown)}, which space(trial) does not suggest")
            config = {**trial.params, **(ret or {})}
            try:
                TrainConfig.from_dict(config, base=base)
            except ConfigError as e:
                raise SpaceError(f"{where}: {what} gives an invalid config: {e}") from None
            params.update(trial.params)
            returned.update(ret or {})
            earlier: dict[str, Any] = {}
            for name, value in trial.params.items():  # in suggestion order
                ranges.setdefault((name, repr(trial.distributions[name])), (trial.distributions[name], dict(earlier)))
                earlier[name] = value
            study.tell(trial, 0.0)

        for i, point in enumerate(points):
            ask(f"points[{i}]", point, strict=True)
        for i in range(RANDOM_ASKS):
            ask(f"random proposal {i + 1}")
        for (name, _), (dist, context) in sorted(ranges.items()):
            for value in _extremes(dist):
                # Define-by-run: what a parameter's range depends on was suggested before it;
                # fixing those keeps conditional parameters and ranges as the space proposes them.
                ask(f"{name}={value!r}", {**context, name: value})
    return params, returned - params


def _extremes(dist: Any) -> list[Any]:
    """Every categorical choice, or both ends of a numeric range."""
    if hasattr(dist, "choices"):
        return list(dist.choices)
    high = dist.high
    step = getattr(dist, "step", None)
    if step:  # Optuna rounds `high` down onto the step grid
        high = dist.low + ((dist.high - dist.low) // step) * step
    return [dist.low, high]


def _summary(doc: str | None) -> str:
    return (doc or "").strip().splitlines()[0].strip() if doc and doc.strip() else ""



def format_spaces(spaces: list[dict], directory: Path | None, check: bool) -> str:
    """`fersearch spaces`: each space's name and summary (and its check with --check), its path below."""
    if not spaces:
        return f"no search spaces (*.py) in {directory or 'search_spaces/'}"
    width = max(len(s["name"]) for s in spaces)
    lines = []
    for s in spaces:
        status = f"  [{s['check']}]" if check else ""
        lines.append(f"{s['name']:<{width}}  {s['summary']}{status}\n{'':<{width}}  {s['path']}")
    return "\n".join(lines)
