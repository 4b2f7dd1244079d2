"""The CNN: seed architecture, every model field, raw-pixel input, safe model files (ONNX: test_onnx.py)."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch
from torch import nn

from fersearch.config import TrainConfig
from fersearch.errors import ConfigError, ModelFileError
from fersearch.model import (
    Dropout,
    ScaleInput,
    StandardizeInput,
    build_model,
    count_parameters,
    example_input,
    load_model,
    save_model,
)

SEED = TrainConfig()


def layers(model: nn.Module) -> list[str]:
    """Leaf layers in forward order, with the numbers that define them."""
    out = []
    for m in model.modules():
        if list(m.children()):
            continue
        if isinstance(m, nn.Conv2d):
            out.append(f"Conv2d({m.in_channels},{m.out_channels},{m.kernel_size[0]},{m.padding})")
        elif isinstance(m, nn.Linear):
            out.append(f"Linear({m.in_features},{m.out_features})")
        elif isinstance(m, nn.Dropout):
            out.append(f"Dropout({m.p})")
        elif isinstance(m, nn.MaxPool2d):
            out.append(f"MaxPool2d({m.kernel_size})")
        else:
            out.append(type(m).__name__)
    return out


def test_seed_architecture_parameter_count_and_layer_order():
    model = build_model(SEED)
    assert count_parameters(model) == 1_145_351
    block = ["ReLU", "MaxPool2d(2)", "Dropout(0.25)"]
    assert layers(model) == [
        "ScaleInput",
        "Conv2d(1,32,3,valid)", *block,
        "Conv2d(32,64,3,valid)", *block,
        "Conv2d(64,128,3,valid)", *block,
        "Flatten", "Linear(2048,512)", "ReLU", "Dropout(0.5)", "Linear(512,7)",
    ]


@pytest.mark.parametrize("change, expect", [
    ({"blocks": 2}, lambda ls: ls.count("MaxPool2d(2)") == 2 and "Linear(6400,512)" in ls),
    ({"filters": [16, 32, 48]}, lambda ls: "Conv2d(1,16,3,valid)" in ls and "Linear(768,512)" in ls),
    ({"filters_2": 40}, lambda ls: "Conv2d(32,40,3,valid)" in ls),
    ({"kernel_size": 5}, lambda ls: "Conv2d(1,32,5,valid)" in ls and "Linear(512,512)" in ls),
    ({"padding": "same"}, lambda ls: "Conv2d(1,32,3,same)" in ls and "Linear(4608,512)" in ls),
    ({"convs_per_block": 2}, lambda ls: sum(x.startswith("Conv2d") for x in ls) == 6),
    ({"dropout_3": 0.4}, lambda ls: [x for x in ls if x.startswith("Dropout")] == [
        "Dropout(0.25)", "Dropout(0.25)", "Dropout(0.4)", "Dropout(0.5)"]),
    ({"batch_norm": True}, lambda ls: ls.count("BatchNorm2d") == 3 and ls.count("BatchNorm1d") == 1),
    ({"dense": 256}, lambda ls: "Linear(2048,256)" in ls and "Linear(256,7)" in ls),
    ({"dense_dropout": 0.3}, lambda ls: "Dropout(0.3)" in ls),
    ({"normalize": "standardize"}, lambda ls: ls[0] == "StandardizeInput"),
])
def test_every_model_field_changes_the_model(change, expect):
    ls = layers(build_model(SEED.replace(**change)))
    assert ls != layers(build_model(SEED))
    assert expect(ls), ls


def test_batch_norm_drops_the_redundant_conv_bias():
    model = build_model(SEED.replace(batch_norm=True))
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert all(c.bias is None for c in convs)


def test_weights_start_as_in_keras_glorot_uniform_zero_bias():
    torch.manual_seed(0)
    model = build_model(SEED)
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(m.weight)
            bound = (6 / (fan_in + fan_out)) ** 0.5
            assert m.weight.abs().max() <= bound
            assert m.weight.abs().max() > 0.9 * bound  # uniform over the whole Glorot range
            assert not m.bias.any()


@pytest.mark.parametrize("p", [0.05, 0.25, 0.5])
@pytest.mark.parametrize("layout", ["dense", "channels_last"])
def test_cpu_dropout_drops_p_keeps_the_mean_and_masks_the_gradient(p, layout):
    drop = Dropout(p)
    x = torch.ones(32, 16, 24, 24) if layout == "channels_last" else torch.ones(64, 4608)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    torch.manual_seed(3)
    y = drop(x)
    dropped = (y == 0).float().mean().item()
    assert abs(dropped - p) < 0.01
    assert abs(y.mean().item() - 1) < 0.02  # kept units are scaled by 1/(1-p)
    assert torch.allclose(y[y != 0], torch.full_like(y[y != 0], 1 / (1 - p)))
    # Masks are independent across positions and channels (no layout artefact) ...
    per_channel = (y == 0).float().mean(dim=0).flatten()
    assert per_channel.std() < 0.1
    # ... the gradient flows through kept units only ...
    y.sum().backward()
    assert torch.equal(x.grad == 0, y == 0)
    # ... the global torch seed makes it reproducible, and eval mode is the identity.
    torch.manual_seed(3)
    assert torch.equal(drop(x.detach()), y.detach())
    assert torch.equal(drop.eval()(x.detach()), x.detach())


def test_normalisation_happens_inside_the_model():
    x = example_input(4)
    assert torch.allclose(ScaleInput()(x), x / 255)
    z = StandardizeInput()(x)
    assert torch.allclose(z.mean(dim=(1, 2, 3)), torch.zeros(4), atol=1e-5)
    assert torch.allclose(z.std(dim=(1, 2, 3)), torch.ones(4), atol=1e-4)
    # A flat image stays finite instead of dividing by a zero std.
    assert torch.isfinite(StandardizeInput()(torch.full((1, 1, 48, 48), 128.0))).all()
    # The two modes really feed the network differently.
    torch.manual_seed(0)
    a = build_model(SEED).eval()
    torch.manual_seed(0)
    b = build_model(SEED.replace(normalize="standardize")).eval()
    with torch.no_grad():
        assert not torch.allclose(a(x), b(x))


def test_impossible_shape_is_a_config_error_naming_the_key():
    with pytest.raises(ConfigError, match="blocks"):
        TrainConfig.from_dict({"blocks": 6})


def test_logits_for_raw_pixels_and_a_traced_model_matches_eager():
    """Tracing is what the ONNX export does: the traced graph must equal the eager model."""
    torch.manual_seed(0)
    model = build_model(SEED.replace(batch_norm=True, normalize="standardize")).eval()
    x = example_input(3)
    with torch.no_grad():
        eager = model(x)
        assert eager.shape == (3, 7)
        assert torch.allclose(torch.jit.trace(model, x)(x), eager, atol=1e-5)


def test_save_load_roundtrip_with_weights_only(tmp_path):
    torch.manual_seed(1)
    cfg = SEED.replace(dense=64, filters=[8, 16, 16])
    model = build_model(cfg).eval()
    path = save_model(tmp_path / "model.pt", model, cfg, {"val_acc": 0.5, "note": "x"})
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == "fersearch-model" and raw["version"] == 1
    assert raw["config"] == cfg.to_dict()
    assert raw["labels"][0] == "Angry" and len(raw["labels"]) == 7
    assert path == tmp_path / "model.pt" and [p.name for p in tmp_path.iterdir()] == ["model.pt"]  # no temp file
    loaded, cfg2, meta = load_model(path)
    assert cfg2 == cfg and meta == {"val_acc": 0.5, "note": "x"}
    assert not loaded.training
    x = example_input(2)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


class _RunsCode:
    """Unpickling this runs a shell command: exactly what weights_only=True must refuse."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _one_line_model_error(path) -> str:
    with pytest.raises(ModelFileError) as e:
        load_model(path)
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg
    return msg


def test_load_model_refuses_pickles_with_code(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"format": "fersearch-model", "version": 1, "payload": _RunsCode(marker)}, f, protocol=2)
    torch.save({"format": "fersearch-model", "version": 1, "payload": _RunsCode(marker)}, tmp_path / "evil2.pt")
    for p in (path, tmp_path / "evil2.pt"):
        assert "Python objects or code" in _one_line_model_error(p)
    assert not marker.exists(), "loading the model file executed code"


def test_load_model_rejects_other_files(tmp_path):
    assert "not found" in _one_line_model_error(tmp_path / "missing.pt")
    junk = tmp_path / "random.pt"
    junk.write_bytes(np.random.default_rng(0).bytes(4096))
    assert "not a readable PyTorch file" in _one_line_model_error(junk)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, other)
    assert "not a fersearch model" in _one_line_model_error(other)
    # Weights that do not fit the recorded config.
    cfg = SEED.replace(dense=32)
    path = save_model(tmp_path / "m.pt", build_model(cfg), cfg)
    raw = torch.load(path, weights_only=True)
    raw["config"]["dense"] = 64
    torch.save(raw, path)
    assert "do not match" in _one_line_model_error(path)
