"""best/model.onnx: uint8 pixels (N, 1, 48, 48) in, probabilities out, every preprocessing step
inside the graph; ONNX Runtime agrees with PyTorch (max |dp| <= 1e-4); `predict --model
model.onnx` runs without torch doing the maths; wrong kinds of model file are one-line errors."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from conftest import assert_one_line_error
from fersearch.cli import app
from fersearch.config import TrainConfig
from fersearch.data.schema import LABELS
from fersearch.deploy import OnnxModel, export_onnx, latency_ms, measure, onnx_bytes
from fersearch.model import build_model, save_model
from fersearch.train.predict import predict, predict_proba

runner = CliRunner()
TOL = 1e-4


@pytest.mark.parametrize("cfg", [TrainConfig(filters=(8, 16, 16), dense=32),
                                 TrainConfig(filters=(8, 16), dropout=(0.25, 0.25), blocks=2, dense=32, batch_norm=True,
                                             normalize="standardize")], ids=["scale", "standardize+bn"])
def test_onnx_runtime_agrees_with_pytorch_on_raw_uint8_pixels(cfg, tmp_path):
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    path = export_onnx(model, tmp_path / "model.onnx", cfg)
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]  # written atomically, no temp file left
    proto = onnx.load(path)
    onnx.checker.check_model(proto)
    (inp,), (out,) = proto.graph.input, proto.graph.output
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.UINT8 and (inp.name, out.name) == ("pixels",
                                                                                                "probabilities")
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta["labels"]) == list(LABELS) and TrainConfig.from_dict(json.loads(meta["config"])) == cfg
    # Faces of very different brightness and contrast: standardisation must happen inside the graph.
    rng = np.random.default_rng(0)
    faces = (rng.integers(0, 256, (40, 48, 48)) * rng.uniform(0.05, 1, (40, 1, 1))).astype(np.uint8)
    ort_probs = OnnxModel(path).predict_proba(faces)
    assert np.abs(ort_probs - predict_proba(model, faces)).max() <= TOL
    assert np.allclose(ort_probs.sum(1), 1, atol=1e-5)
    assert np.abs(OnnxModel(path).predict_proba(faces, tta=True) - predict_proba(model, faces, tta=True)).max() <= TOL


def test_predict_with_an_onnx_model_never_calls_torch(tmp_path, monkeypatch):
    torch.manual_seed(1)
    cfg = TrainConfig(filters=(8, 16, 16), dense=32, normalize="standardize")
    model = build_model(cfg).eval()
    export_onnx(model, tmp_path / "model.onnx", cfg)
    faces = np.random.default_rng(1).integers(0, 256, (3, 48, 48), dtype=np.uint8)
    paths = []
    for i, f in enumerate(faces):
        paths.append(tmp_path / f"face{i}.png")
        Image.fromarray(f).save(paths[-1])
    expected = predict_proba(model, faces)

    def no_torch(*_a, **_k):
        raise AssertionError("a torch module ran while predicting with model.onnx")

    monkeypatch.setattr(torch.nn.Module, "__call__", no_torch)
    res = runner.invoke(app, ["predict", *map(str, paths), "--model", str(tmp_path / "model.onnx"), "--json"])
    assert res.exit_code == 0, res.output
    got = [[p["probabilities"][n] for n in LABELS] for p in json.loads(res.stdout)["predictions"]]
    assert np.abs(np.array(got) - expected).max() <= TOL
    assert [p.emotion for p in predict(paths, tmp_path / "model.onnx")] == [LABELS[i] for i in expected.argmax(1)]


def test_wrong_kinds_of_model_file_are_one_line_errors(tmp_path):
    from onnx import TensorProto, helper

    img = tmp_path / "face.png"
    Image.fromarray(np.zeros((48, 48), np.uint8)).save(img)
    cfg = TrainConfig(filters=(8, 16, 16), dense=32)
    pt = save_model(tmp_path / "model.pt", build_model(cfg).eval(), cfg)
    fake = tmp_path / "renamed.onnx"
    fake.write_bytes(pt.read_bytes())
    assert_one_line_error(runner.invoke(app, ["predict", str(img), "--model", str(fake)]),
                          "renamed.onnx is not an ONNX model")
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "other",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 224, 224])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 224, 224])])
    other = tmp_path / "other.onnx"
    onnx.save(helper.make_model(graph), other)
    assert_one_line_error(runner.invoke(app, ["predict", str(img), "--model", str(other)]),
                          "other.onnx is an ONNX model but not a fersearch one")
    as_pt = tmp_path / "model_from_onnx.pt"
    as_pt.write_bytes(onnx_bytes(build_model(cfg).eval(), cfg))
    assert_one_line_error(runner.invoke(app, ["predict", str(img), "--model", str(as_pt)]), "not a fersearch model")
    assert_one_line_error(runner.invoke(app, ["predict", str(img), "--model", str(tmp_path / "gone.onnx")]),
                          "gone.onnx not found")


def test_latency_is_a_stable_batch_one_median_and_grows_with_the_model():
    torch.manual_seed(0)
    small = build_model(TrainConfig(filters=(8, 16, 16), dense=32)).eval()
    big = build_model(TrainConfig(filters=(64, 128, 256), dense=1024)).eval()
    s, b = measure(small), measure(big)
    assert 0 < s["latency_ms"] < b["latency_ms"] and s["params"] < b["params"] and s["onnx_bytes"] < b["onnx_bytes"]
    again = latency_ms(onnx_bytes(big))
    assert abs(again - b["latency_ms"]) / b["latency_ms"] < 0.5  # a median: loose, as the machine is shared


@pytest.mark.slow
def test_best_evaluate_writes_an_onnx_file_that_agrees_with_model_pt(evaluated_experiment, monkeypatch):
    """The real `best --evaluate` output: model.onnx in ONNX Runtime on the test images gives
    model.pt's probabilities, and the same predictions as predictions.csv."""
    import pandas as pd

    from fersearch.data import load
    from fersearch.model import load_model

    best = evaluated_experiment / "best"
    monkeypatch.chdir(evaluated_experiment.parent.parent)
    meta = json.loads((evaluated_experiment / "fersearch.json").read_text())
    images, _ = load(meta["data"]["path"], log=lambda *_: None).subset("test")
    model, cfg, _ = load_model(best / "model.pt")
    ort = OnnxModel(best / "model.onnx")
    assert TrainConfig.from_dict(ort.config) == cfg
    ort_probs = ort.predict_proba(images)
    assert np.abs(ort_probs - predict_proba(model, images)).max() <= TOL
    preds = pd.read_csv(best / "predictions.csv", index_col="index")
    assert [LABELS[i] for i in ort_probs.argmax(1)] == preds["predicted"].tolist()
