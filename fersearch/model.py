"""The CNN, built only from a `TrainConfig`, and its model file.

`build_model(TrainConfig())` is exactly the seed (the classic 3-block Keras FER CNN):

    Conv 32 3x3 ReLU, MaxPool 2, Dropout .25
    Conv 64 3x3 ReLU, MaxPool 2, Dropout .25
    Conv 128 3x3 ReLU, MaxPool 2, Dropout .25
    Flatten, Dense 512 ReLU, Dropout .5, Dense 7          -> 1,145,351 parameters

Weights start as in Keras (Glorot-uniform kernels, zero biases), as the classic CNN did:
on the default data that leaves the majority-class plateau about an epoch sooner than
PyTorch's default initialisation.

The model takes raw pixels (float 0..255, shape (N, 1, 48, 48)) and normalises them
itself, so training, evaluation, `predict` and the ONNX export (fersearch.deploy) can never
disagree about preprocessing. It returns logits; softmax lives in the loss and in predict.

Model files (`model.pt`) hold only tensors and plain data, so they load with
`torch.load(weights_only=True)`; `load_model` refuses anything else. The deployable file is
best/model.onnx (fersearch.deploy); TorchScript is gone (deprecated, and loading it runs code).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .config import TrainConfig
from .data.schema import NUM_CLASSES
from .data.schema import SIZE as IMAGE_SIZE
from .errors import ConfigError, ModelFileError
from .fmt import first_line
from .io import atomic_path

MODEL_FORMAT = "fersearch-model"
MODEL_VERSION = 1


class ScaleInput(nn.Module):
    """Pixels 0..255 to [0, 1], as the seed does."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * (1.0 / 255.0)


class StandardizeInput(nn.Module):
    """Per-image zero mean, unit std: removes lighting and contrast differences between faces."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        std = x.std(dim=(1, 2, 3), keepdim=True)
        # A flat image has std 0; the floor keeps it finite instead of dividing by zero.
        return (x - mean) / std.clamp_min(1.0)


class Dropout(nn.Dropout):
    """nn.Dropout with a cheaper mask on the CPU (same distribution, same global torch RNG).

    PyTorch's CPU dropout draws one Bernoulli per element and is ~20% of a seed training
    step; here one 64-bit random word gives four 16-bit uniforms, which halves the cost of
    dropout forward + backward. The keep probability is rounded to 1/65536.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and self.p > 0 and x.device.type == "cpu" and not torch.jit.is_scripting() \
                and (x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last)):
            return self._cpu_dropout(x)
        return nn.functional.dropout(x, self.p, self.training, self.inplace)

    @torch.jit.unused
    def _cpu_dropout(self, x: torch.Tensor) -> torch.Tensor:
        if self.p >= 1:
            return x * 0
        n = x.numel()
        words = torch.empty((n + 3) // 4, dtype=torch.int64).random_(-(2**63), None)  # full 64-bit range
        uniform16 = words.view(torch.int16)[:n].as_strided(x.shape, x.stride())  # in x's memory layout
        keep = uniform16 >= round(self.p * 65536) - 32768
        return x * keep.to(x.dtype).mul_(1.0 / (1.0 - self.p))


def keras_init(model: nn.Module) -> None:
    """Glorot-uniform weights and zero biases for every conv and dense layer (Keras' defaults)."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class FerCNN(nn.Module):
    """normalise -> conv blocks -> dense head. The layers live in three named children so a
    reader (and the layer-order test) sees the whole architecture by printing the model."""

    def __init__(self, normalize: nn.Module, features: nn.Sequential, classifier: nn.Sequential):
        super().__init__()
        self.normalize = normalize
        self.features = features
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(self.normalize(x)))


def build_model(cfg: TrainConfig) -> FerCNN:
    """The CNN described by `cfg` (weights initialised from the current torch RNG)."""
    normalize = ScaleInput() if cfg.normalize == "scale" else StandardizeInput()
    layers: list[nn.Module] = []
    channels = 1
    for filters, dropout in zip(cfg.filters, cfg.dropout):
        for _ in range(cfg.convs_per_block):
            # A conv bias right before batch norm is cancelled by its mean subtraction.
            layers.append(nn.Conv2d(channels, filters, cfg.kernel_size, padding=cfg.padding, bias=not cfg.batch_norm))
            if cfg.batch_norm:
                layers.append(nn.BatchNorm2d(filters))
            layers.append(nn.ReLU(inplace=True))
            channels = filters
        layers.append(nn.MaxPool2d(2))
        layers.append(Dropout(dropout))
    side = cfg.feature_size()
    head: list[nn.Module] = [nn.Flatten(), nn.Linear(channels * side * side, cfg.dense, bias=not cfg.batch_norm)]
    if cfg.batch_norm:
        head.append(nn.BatchNorm1d(cfg.dense))
    head += [nn.ReLU(inplace=True), Dropout(cfg.dense_dropout), nn.Linear(cfg.dense, NUM_CLASSES)]
    model = FerCNN(normalize, nn.Sequential(*layers), nn.Sequential(*head))
    keras_init(model)
    return model


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def example_input(n: int = 2) -> torch.Tensor:
    """A raw-pixel batch of the shape the model expects (for tracing and smoke checks)."""
    return torch.rand(n, 1, IMAGE_SIZE, IMAGE_SIZE) * 255.0


# ------------------------------------------------------------------ model files
def save_model(path: str | os.PathLike, model: nn.Module, cfg: TrainConfig, meta: dict[str, Any] | None = None) -> Path:
    """Write `model.pt`: weights, the config that rebuilds the model, labels and `meta`
    (plain JSON-like values only, so the file stays loadable with weights_only=True)."""
    from .data.schema import LABELS  # late: keeps model import light for callers that never save

    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    payload = {
        "format": MODEL_FORMAT,
        "version": MODEL_VERSION,
        "config": cfg.to_dict(),
        "labels": list(LABELS),
        "state_dict": state,
        "meta": dict(meta or {}),
    }
    with atomic_path(path) as tmp:  # a reader never sees half a model
        torch.save(payload, tmp)
    return Path(path)


def load_model(path: str | os.PathLike) -> tuple[FerCNN, TrainConfig, dict[str, Any]]:
    """(model in eval mode on the CPU, its config, its meta) from a file written by `save_model`."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"model file {path} not found; pass the model.pt of a train or best run")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means "not a safe fersearch model"
        if "GLOBAL" in str(e):  # weights_only met a class or function: Python objects, possibly code
            reason = "it references Python objects or code, which fersearch never loads"
        else:
            reason = "it is not a readable PyTorch file"
        raise ModelFileError(f"{path} is not a fersearch model file: {reason}; "
                             "pass a model.pt written by fersearch") from None
    if not isinstance(payload, dict) or payload.get("format") != MODEL_FORMAT:
        raise ModelFileError(f"{path} is not a fersearch model file (no format={MODEL_FORMAT!r} marker)")
    if payload.get("version") != MODEL_VERSION:
        raise ModelFileError(
            f"{path} is fersearch model version {payload.get('version')!r}; "
            f"this fersearch reads version {MODEL_VERSION}"
        )
    for key, kind in (("config", dict), ("meta", dict), ("state_dict", dict)):
        if not isinstance(payload.get(key, {}), kind):
            raise ModelFileError(f"{path}: its {key!r} is a {type(payload.get(key)).__name__}, not a mapping; "
                                 "pass a model.pt written by fersearch")
    try:
        cfg = TrainConfig.from_dict(payload.get("config"))
    except (ConfigError, TypeError, ValueError, AttributeError) as e:
        raise ModelFileError(f"{path} has an invalid config: {first_line(e)[:200]}") from None
    state = payload.get("state_dict") or {}
    _check_weights(path, cfg, state)  # before any allocation: the config's shapes against the file's tensors
    model = build_model(cfg)
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as e:
        raise ModelFileError(f"{path}: weights do not match its config ({first_line(e)[:200]})") from None
    model.eval()
    return model, cfg, dict(payload.get("meta") or {})


def _check_weights(path: Path, cfg: TrainConfig, state: dict) -> None:
    """The state dict has exactly the tensors `cfg`'s model has, of the same shapes, finite. The model
    is built on the meta device (no memory): a small file whose config asks for a huge network is
    refused here instead of allocating gigabytes first."""
    with torch.device("meta"):
        skeleton = build_model(cfg)
    expected = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
    bad = next((k for k, v in state.items() if not isinstance(v, torch.Tensor)), None)
    if bad is not None or set(state) != set(expected):
        what = (f"{bad!r} is not a tensor" if bad is not None else
                f"tensors {sorted(set(expected) ^ set(state))[:3]} missing or extra")
        raise ModelFileError(f"{path}: weights do not match its config ({what}); pass a model.pt written by fersearch")
    for k, shape in expected.items():
        if tuple(state[k].shape) != shape:
            raise ModelFileError(f"{path}: weights do not match its config ({k} is {tuple(state[k].shape)}, "
                                 f"the config needs {shape}); pass a model.pt written by fersearch")
        if state[k].is_floating_point() and not bool(torch.isfinite(state[k]).all()):
            raise ModelFileError(f"{path}: weights {k} hold NaN or infinite values; pass a model.pt whose training "
                                 "did not diverge")
