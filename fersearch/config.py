"""The one configuration object: model shape and training hyperparameters.

`TrainConfig()` is exactly the seed: the classic 3-block Keras FER CNN
(32/64/128 filters, 3x3 valid convs, dropout .25 per block, dense 512, dropout .5),
Adam 1e-3, batch 64, 30 epochs, no augmentation, pixels scaled to [0, 1].

Configs come from search spaces, `--set key=value` and JSON files as plain dicts,
so `from_dict` is strict: unknown keys, wrong types, bad choices and impossible
shapes are `ConfigError`s naming the key, raised before any training starts.
Per-block values may be given as lists (`filters=[32, 64, 128]`) or flat
(`filters_1=32, filters_2=64`), because Optuna parameters are flat names.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass, fields
from typing import Any

from .data.schema import SIZE as IMAGE_SIZE
from .errors import ConfigError

PER_BLOCK = ("filters", "dropout")

CHOICES = {
    "padding": ("valid", "same"),
    "optimizer": ("adam", "adamw", "sgd"),
    "schedule": ("none", "cosine", "plateau"),
    "class_weighting": ("none", "balanced"),
    "normalize": ("scale", "standardize"),
    "precision": ("auto", "bf16", "fp32"),
    "cuda_graphs": ("auto", "on", "off"),
}

# Inclusive numeric bounds; anything outside is a mistake, not a hyperparameter.
BOUNDS = {
    "blocks": (1, 6),
    "kernel_size": (1, 7),
    "convs_per_block": (1, 3),
    "dense": (1, 8192),
    "dense_dropout": (0.0, 0.95),
    "lr": (1e-7, 10.0),
    "weight_decay": (0.0, 1.0),
    "momentum": (0.0, 0.999),
    "batch_size": (1, 8192),
    "epochs": (1, 10_000),
    "patience": (0, 10_000),
    "label_smoothing": (0.0, 0.5),
    "shift": (0, 16),
    "rotation": (0.0, 45.0),
    "erasing": (0.0, 1.0),
    "seed": (0, 2**31 - 1),
}
FILTER_BOUNDS = (1, 2048)
DROPOUT_BOUNDS = (0.0, 0.95)


def hard_bounds(param: str) -> tuple[float, float] | None:
    """The config's own limits for a search-space parameter (BOUNDS; `filters_<i>` and `dropout_<i>`
    per block), None for one without. A best value there cannot lie beyond: nothing to widen."""
    if param in BOUNDS:
        return BOUNDS[param]
    stem, _, idx = param.rpartition("_")
    if idx.isdigit():
        return {"filters": FILTER_BOUNDS, "dropout": DROPOUT_BOUNDS}.get(stem)
    return None


def default_filters(blocks: int) -> tuple[int, ...]:
    """32, 64, 128, ... as in the seed (doubling per block)."""
    return tuple(32 * 2**i for i in range(blocks))


@dataclass(frozen=True)
class TrainConfig:
    # --- model ---
    blocks: int = 3
    filters: tuple[int, ...] = (32, 64, 128)
    kernel_size: int = 3
    padding: str = "valid"
    convs_per_block: int = 1
    dropout: tuple[float, ...] = (0.25, 0.25, 0.25)
    batch_norm: bool = False
    dense: int = 512
    dense_dropout: float = 0.5
    # --- optimisation ---
    optimizer: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.9  # sgd only (nesterov)
    batch_size: int = 64
    epochs: int = 30
    patience: int = 5  # early stopping on val_acc; 0 turns it off
    schedule: str = "none"
    label_smoothing: float = 0.0
    class_weighting: str = "none"
    # --- input and augmentation ---
    normalize: str = "scale"
    hflip: bool = False
    shift: int = 0  # max random shift in pixels
    rotation: float = 0.0  # max random rotation in degrees
    erasing: float = 0.0  # probability of random erasing per image
    # --- run ---
    precision: str = "auto"
    cuda_graphs: str = "auto"  # CUDA: each full batch one replayed graph (train/graphs.py); the CPU never
    deterministic: bool = False  # bit-identical GPU runs (no cuDNN autotuning, deterministic kernels), slower
    seed: int = 0

    def __post_init__(self) -> None:
        _validate(self)

    # ------------------------------------------------------------------ io
    @classmethod
    def from_dict(cls, d: dict[str, Any] | None = None, base: TrainConfig | None = None) -> TrainConfig:
        """Build from a plain dict on top of `base` (default: the seed)."""
        d = dict(d or {})
        known = {f.name for f in fields(cls)}
        flat: dict[str, dict[int, Any]] = {k: {} for k in PER_BLOCK}
        values: dict[str, Any] = {}
        for key, value in d.items():
            m = re.fullmatch(r"(filters|dropout)_(\d+)", str(key))
            if m:
                flat[m.group(1)][int(m.group(2))] = value
            elif key in known:
                values[key] = _coerce(key, value)
            else:
                raise ConfigError(
                    f"unknown config key {key!r}; valid keys: {', '.join(sorted(known))} "
                    f"(per-block values also as filters_N / dropout_N)"
                )
        base = base or cls()
        blocks = values.get("blocks", base.blocks)
        for name in PER_BLOCK:
            if name in values:
                seq = list(values[name])
            else:
                seq = list(getattr(base, name))
                default = default_filters(blocks) if name == "filters" else (0.25,) * blocks
                seq = (seq + list(default[len(seq):]))[:blocks]
            for idx, v in flat[name].items():
                if not 1 <= idx <= blocks:
                    raise ConfigError(f"config key '{name}_{idx}' is outside blocks 1..{blocks}; "
                                      "drop it or raise 'blocks'")
                seq[idx - 1] = _coerce(f"{name}_{idx}", v, int if name == "filters" else float)
            values[name] = tuple(seq)
        return dataclasses.replace(base, **values)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for k in PER_BLOCK:
            d[k] = list(d[k])
        return d

    def replace(self, **changes: Any) -> TrainConfig:
        return TrainConfig.from_dict(changes, base=self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_json_file(cls, path: str) -> TrainConfig:
        try:
            with open(path) as f:
                d = json.load(f)
        except FileNotFoundError:
            raise ConfigError(f"config file {path} not found; pass an existing JSON file to --config") from None
        except json.JSONDecodeError as e:
            raise ConfigError(f"config file {path} is not valid JSON (line {e.lineno}): {e.msg}") from None
        if not isinstance(d, dict):
            raise ConfigError(f"config file {path} must hold a JSON object of key: value pairs")
        return cls.from_dict(d)

    # ---------------------------------------------------------------- shape
    def feature_size(self) -> int:
        """Side length of the feature map after the last block (raises if < 1)."""
        side = IMAGE_SIZE
        for b in range(self.blocks):
            for _ in range(self.convs_per_block):
                if self.padding == "valid":
                    side -= self.kernel_size - 1
                if side < 1:
                    break
            side //= 2
            if side < 1:
                raise ConfigError(
                    f"impossible shape: {self.blocks} blocks of {self.convs_per_block}x conv{self.kernel_size} "
                    f"({self.padding} padding) shrink 48x48 below 1x1 at block {b + 1}; "
                    f"use fewer 'blocks', a smaller 'kernel_size' or padding='same'"
                )
        return side


def _coerce(key: str, value: Any, typ: type | None = None) -> Any:
    """Convert strings from `--set` and JSON numbers to the field's type, strictly."""
    if typ is None:
        typ = _FIELD_TYPES[key]
    if typ is tuple:
        elem = int if key == "filters" else float
        if isinstance(value, str):
            value = [v for v in re.split(r"[,\s]+", value.strip("[]() ")) if v]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key {key!r} must be a list like [32, 64, 128], got {value!r}")
        return tuple(_coerce(key, v, elem) for v in value)
    if typ is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no", "on", "off"):
            return value.lower() in ("true", "1", "yes", "on")
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise ConfigError(f"config key {key!r} must be true or false, got {value!r}")
    if typ is int:
        f = _number(key, value, "an integer")
        if f != int(f):
            raise ConfigError(f"config key {key!r} must be an integer, got {value!r}")
        return int(f)
    if typ is float:
        return _number(key, value, "a (finite) number")
    if typ is str:
        if not isinstance(value, str):
            raise ConfigError(f"config key {key!r} must be one of {', '.join(CHOICES[key])}, got {value!r}")
        return value.lower()
    raise AssertionError(typ)


_FIELD_TYPES: dict[str, type] = {
    f.name: (tuple if "tuple" in str(f.type) else {"int": int, "float": float, "bool": bool, "str": str}[str(f.type)])
    for f in fields(TrainConfig)
}


def _number(key: str, value: Any, what: str) -> float:
    """A finite float from a number or numeric text (not a bool), or a ConfigError saying `what` is expected."""
    try:
        f = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        f = math.nan
    if not math.isfinite(f):
        raise ConfigError(f"config key {key!r} must be {what}, got {value!r}")
    return f


def _validate(cfg: TrainConfig) -> None:
    for key, typ in _FIELD_TYPES.items():
        value = getattr(cfg, key)
        ok = isinstance(value, tuple) if typ is tuple else (
            isinstance(value, (int, float)) and not isinstance(value, bool) if typ is float
            else isinstance(value, typ) and not (typ is int and isinstance(value, bool))
        )
        if not ok:
            raise ConfigError(f"config key {key!r} has the wrong type: {value!r}")
    for key, allowed in CHOICES.items():
        if getattr(cfg, key) not in allowed:
            raise ConfigError(f"config key {key!r} must be one of {', '.join(allowed)}, got {getattr(cfg, key)!r}")
    for key, (lo, hi) in BOUNDS.items():
        v = getattr(cfg, key)
        if not lo <= v <= hi:
            raise ConfigError(f"config key {key!r} = {v} is out of range; use a value in [{lo}, {hi}]")
    for name, (lo, hi) in (("filters", FILTER_BOUNDS), ("dropout", DROPOUT_BOUNDS)):
        seq = getattr(cfg, name)
        if len(seq) != cfg.blocks:
            raise ConfigError(
                f"config key {name!r} has {len(seq)} values but blocks={cfg.blocks}; give one value per block"
            )
        for i, v in enumerate(seq, 1):
            if not lo <= v <= hi:
                raise ConfigError(f"config key '{name}_{i}' = {v} is out of range; use a value in [{lo}, {hi}]")
    if cfg.padding == "same" and cfg.kernel_size % 2 == 0:
        raise ConfigError("config key 'kernel_size' must be odd with padding='same'")
    cfg.feature_size()


def parse_set(items: list[str] | None) -> dict[str, Any]:
    """`--set key=value` pairs to a dict (values stay strings; from_dict coerces)."""
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"--set {item!r} is not key=value; write e.g. --set lr=3e-4")
        key, value = item.split("=", 1)
        out[key.strip()] = value.strip()
    return out
