"""The deployable model: best/model.onnx, running it in ONNX Runtime, and its latency.

The ONNX graph takes **uint8** pixels, shape (N, 1, 48, 48), 0..255, and returns
**probabilities** (N, 7) in fersearch.data.schema.LABELS order. uint8, not float: the type
itself says "raw pixels", so a caller cannot feed 0..1 floats and get silently wrong answers;
the cast, the model's own normalisation (scale or per-image standardisation) and the softmax
are all inside the graph, so a deployment needs no fersearch code at all.

ONNX, not TorchScript: PyTorch's docs mark TorchScript deprecated, ONNX Runtime runs the same
file on servers, phones and in the browser, and loading an ONNX file is parsing data, while
loading TorchScript runs code. Exported with `dynamo=False` (the TorchScript-based exporter
needs only `onnx`; the dynamo one would also need onnxscript).

Latency is measured the way a deployment would see it on a small device: batch 1, one CPU
thread, in ONNX Runtime, median over repeated runs after a warm-up.
"""

from __future__ import annotations

import io
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from .data.schema import LABELS, NUM_CLASSES, SIZE
from .errors import ModelFileError
from .io import atomic_path

ONNX_FILE = "model.onnx"
ONNX_FORMAT = "fersearch-onnx"
INPUT, OUTPUT = "pixels", "probabilities"
OPSET = 17


def onnx_bytes(model: Any, cfg: Any = None) -> bytes:
    """The ONNX export of a FerCNN (eval mode, on the CPU) as bytes, with fersearch metadata."""
    import onnx
    import torch

    class Deployed(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module):
            super().__init__()
            self.inner = inner

        def forward(self, pixels: torch.Tensor) -> torch.Tensor:
            return torch.softmax(self.inner(pixels.float()), dim=1)

    wrapped = Deployed(model).to("cpu").eval()
    buf = io.BytesIO()
    example = torch.randint(0, 256, (2, 1, SIZE, SIZE), dtype=torch.uint8)
    torch.onnx.export(wrapped, (example,), buf, dynamo=False, opset_version=OPSET,  # type: ignore[arg-type]
                      input_names=[INPUT], output_names=[OUTPUT], dynamic_axes={INPUT: {0: "n"}, OUTPUT: {0: "n"}})
    proto = onnx.load_from_string(buf.getvalue())
    meta = {"format": ONNX_FORMAT, "labels": json.dumps(list(LABELS)),
            "input": "uint8 pixels (N, 1, 48, 48), 0..255", "output": "probabilities (N, 7) in labels order"}
    if cfg is not None:
        meta["config"] = json.dumps(cfg.to_dict())
    for key, value in meta.items():
        prop = proto.metadata_props.add()
        prop.key, prop.value = key, value
    return proto.SerializeToString()


def export_onnx(model: Any, path: str | os.PathLike, cfg: Any = None) -> Path:
    """Write best/model.onnx (see the module docstring for its input and output)."""
    data = onnx_bytes(model, cfg)
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(data)
    return Path(path)


def _session(model: str | os.PathLike | bytes, threads: int | None = None) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3  # ORT's own warnings would break the one-line error contract
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    src = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(src, sess_options=opts, providers=["CPUExecutionProvider"])


class OnnxModel:
    """A fersearch ONNX file in ONNX Runtime: `predict_proba(images_uint8 (N, 48, 48))` as for torch."""

    def __init__(self, path: str | os.PathLike, threads: int | None = None):
        path = Path(path)
        if not path.is_file():
            raise ModelFileError(f"model file {path} not found; pass the model.onnx of a `best --evaluate`")
        try:
            self.session = _session(path, threads)
        except Exception as e:  # noqa: BLE001 - ORT raises its own types for any unparsable file
            raise ModelFileError(f"{path} is not an ONNX model ({str(e).splitlines()[0][:120]}); "
                                 "pass the model.onnx written by `fersearch best --evaluate`") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if (meta.get("format") != ONNX_FORMAT or len(inputs) != 1 or inputs[0].type != "tensor(uint8)"
                or list(inputs[0].shape[1:]) != [1, SIZE, SIZE] or len(outputs) != 1):
            raise ModelFileError(f"{path} is an ONNX model but not a fersearch one (it needs format={ONNX_FORMAT!r} "
                                 "metadata and uint8 input (N, 1, 48, 48)); pass the model.onnx of `best --evaluate`")
        self.path = path
        self.input = inputs[0].name
        self.config = _contract(path, outputs[0], meta)

    def predict_proba(self, images_uint8: np.ndarray, tta: bool = False) -> np.ndarray:
        x = np.ascontiguousarray(np.asarray(images_uint8, dtype=np.uint8).reshape(-1, 1, SIZE, SIZE))
        if len(x) == 0:
            return np.empty((0, NUM_CLASSES), np.float32)
        probs = self._run(x)
        if tta:  # the mean of the two probability vectors, as train.predict's log-space average
            probs = (probs + self._run(np.ascontiguousarray(x[..., ::-1]))) / 2
        return probs

    def _run(self, x: np.ndarray) -> np.ndarray:
        try:
            probs = np.asarray(self.session.run([OUTPUT], {self.input: x})[0])
        except Exception as e:  # noqa: BLE001 - ORT raises its own types when a graph fails on real input
            raise ModelFileError(f"{self.path}: ONNX Runtime cannot run it ({str(e).splitlines()[0][:120]}); "
                                 "pass the model.onnx of `best --evaluate`") from None
        if probs.shape != (len(x), NUM_CLASSES):
            raise ModelFileError(f"{self.path}: its output has shape {probs.shape}, not ({len(x)}, {NUM_CLASSES}); "
                                 "pass the model.onnx of `best --evaluate`")
        return probs


def _contract(path: Path, output: Any, meta: dict[str, str]) -> dict[str, Any] | None:
    """The output fersearch's export writes (name, float type, 7 classes) and readable tags; the config
    tag parsed (None when absent). ModelFileError in one line otherwise."""
    fix = "pass the model.onnx of `best --evaluate`"
    shape = list(output.shape)
    if output.name != OUTPUT or output.type != "tensor(float)":
        raise ModelFileError(f"{path}: its output is {output.name!r} of {output.type}, not {OUTPUT!r} of "
                             f"tensor(float); {fix}")
    if len(shape) != 2 or shape[1] != NUM_CLASSES:
        raise ModelFileError(f"{path}: its output has shape {shape}, not (N, {NUM_CLASSES}) (one probability per "
                             f"emotion); {fix}")
    try:
        labels = json.loads(meta.get("labels", json.dumps(list(LABELS))))
        config = json.loads(meta["config"]) if "config" in meta else None
    except ValueError:
        raise ModelFileError(f"{path}: its fersearch metadata (labels or config) is not valid JSON; {fix}") from None
    if labels != list(LABELS):
        raise ModelFileError(f"{path}: its labels {str(labels)[:80]} are not fersearch's {list(LABELS)}; {fix}")
    if config is not None and not isinstance(config, dict):
        raise ModelFileError(f"{path}: its config tag is a {type(config).__name__}, not a mapping; {fix}")
    return config


def latency_ms(onnx_model: bytes, min_runs: int = 50, min_seconds: float = 0.5) -> float:
    """Median ms of one batch-1 inference in ONNX Runtime on one CPU thread (after 10 warm-up runs;
    at least `min_runs` runs and `min_seconds` of them, so a fast model gets many samples)."""
    session = _session(onnx_model, threads=1)
    x = np.random.default_rng(0).integers(0, 256, (1, 1, SIZE, SIZE), dtype=np.uint8)
    for _ in range(10):
        session.run([OUTPUT], {INPUT: x})
    times: list[float] = []
    started = time.perf_counter()
    while len(times) < min_runs or time.perf_counter() - started < min_seconds:
        t0 = time.perf_counter()
        session.run([OUTPUT], {INPUT: x})
        times.append(time.perf_counter() - t0)
        if len(times) >= 5000:
            break
    return statistics.median(times) * 1000.0


def measure(model: Any, cfg: Any = None) -> dict[str, float]:
    """The deployment figures of a model: latency_ms (see latency_ms), params, onnx_bytes."""
    from .model import count_parameters

    data = onnx_bytes(model, cfg)
    return {"latency_ms": latency_ms(data), "params": float(count_parameters(model)), "onnx_bytes": float(len(data))}
