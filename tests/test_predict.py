"""`fersearch predict` and fersearch.train.predict: any image becomes a 48x48 grayscale face the
way the training data looked, through the one image path a training folder takes too;
predictions agree with `best --evaluate`; the default model is the newest evaluated
experiment's; bad images and bad model files are one-line errors through the real CLI.
(Photos with faces: test_photo.py; ONNX: test_onnx.py.)"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from conftest import assert_one_line_error
from fersearch.cli import app
from fersearch.config import TrainConfig
from fersearch.data.schema import LABELS
from fersearch.errors import DataError
from fersearch.train.predict import load_image, predict

runner = CliRunner()


# ------------------------------------------------------------------ images
def test_a_48x48_grayscale_png_round_trips_exactly(tmp_path):
    face = np.random.default_rng(0).integers(0, 256, (48, 48), dtype=np.uint8)
    Image.fromarray(face, mode="L").save(tmp_path / "face.png")
    assert np.array_equal(load_image(tmp_path / "face.png"), face)


def test_any_size_or_colour_becomes_a_centre_cropped_48x48_gray(tmp_path):
    # A wide colour image: a white square in the middle, pure red bands left and right.
    rgb = np.zeros((120, 240, 3), dtype=np.uint8)
    rgb[:, :, 0] = 255
    rgb[:, 60:180] = 255
    Image.fromarray(rgb).save(tmp_path / "wide.jpg", quality=95)
    out = load_image(tmp_path / "wide.jpg")
    assert out.shape == (48, 48) and out.dtype == np.uint8
    assert out.min() >= 245  # only the white centre square survives the crop

    tall = np.full((300, 90, 4), 0, dtype=np.uint8)
    tall[..., 3] = 255  # opaque black
    Image.fromarray(tall, mode="RGBA").save(tmp_path / "tall.png")
    assert load_image(tmp_path / "tall.png").max() == 0

    deep = (np.linspace(0, 65535, 64 * 64).reshape(64, 64)).astype(np.uint16)
    Image.fromarray(deep).save(tmp_path / "deep.png")  # 16-bit: scaled by the full range, not clipped to white
    img16 = load_image(tmp_path / "deep.png")
    assert img16.min() < 20 and img16.max() > 235
    Image.fromarray(deep // 16).save(tmp_path / "dark16.png")  # a dark 16-bit photo stays dark (not stretched)
    assert load_image(tmp_path / "dark16.png").max() <= 17

    Image.fromarray(rgb).convert("P").save(tmp_path / "pal.gif")
    assert load_image(tmp_path / "pal.gif").shape == (48, 48)


def _odd_images(rng):
    """Files that take every branch of the image path: EXIF-rotated colour jpeg, transparent png,
    16-bit png, palette gif-like png, a non-square colour png, a plain 48x48 png."""
    from PIL import Image

    def noise(h, w, c=None):
        return rng.integers(0, 256, (h, w) if c is None else (h, w, c), dtype=np.uint8)

    rotated = Image.fromarray(noise(60, 90, 3))
    exif = rotated.getexif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees to show upright
    rgba = noise(70, 70, 4)
    rgba[:20, :, 3] = 0  # a transparent band: white, whatever colour it stores
    return {"rotated.jpg": (rotated, {"exif": exif, "quality": 95}),
            "alpha.png": (Image.fromarray(rgba, mode="RGBA"), {}),
            "deep.png": (Image.fromarray(noise(64, 64).astype(np.uint16) * 257), {}),
            "palette.png": (Image.fromarray(noise(50, 50, 3)).convert("P"), {}),
            "wide.png": (Image.fromarray(noise(60, 100, 3)), {}),
            "plain.png": (Image.fromarray(noise(48, 48)), {})}


def test_a_folder_image_and_the_same_file_in_predict_give_identical_model_inputs(tmp_path):
    """The one image path: the image-folder reader (with --resize) and predict (a cropped face,
    --no-detect, or a 48x48 file) turn each file into exactly the same 48x48 pixels."""
    from fersearch.data import load
    from fersearch.train.predict import face_crops

    rng = np.random.default_rng(5)
    files = []
    for i, (name, (img, kw)) in enumerate(_odd_images(rng).items()):
        for split in ("train", "test"):
            folder = tmp_path / split / LABELS[i % 7].lower()
            folder.mkdir(parents=True, exist_ok=True)
            img.save(folder / name, **kw)
            files.append(folder / name)
    fer = load(tmp_path, resize=True, log=lambda m: None)
    assert len(fer.images) == len(files)
    rows = {fer.images[i].tobytes() for i in range(len(fer.images))}
    for f in files:
        crops, _ = face_crops(f, detect=False)
        assert np.array_equal(crops[0], load_image(f)) and load_image(f).tobytes() in rows, f
    rotated = load_image(files[0])  # EXIF orientation 6: the 90-wide, 60-high photo comes out upright
    from PIL import Image, ImageOps
    with Image.open(files[0]) as im:
        assert ImageOps.exif_transpose(im).size == (60, 90)
    assert rotated.shape == (48, 48)
    alpha = next(f for f in files if f.name == "alpha.png")
    assert (load_image(alpha)[:12] == 255).all()  # the transparent top band is white


def test_a_tiny_image_is_enlarged(tmp_path):
    Image.fromarray(np.full((10, 10), 77, dtype=np.uint8)).save(tmp_path / "tiny.png")
    out = load_image(tmp_path / "tiny.png")
    assert out.shape == (48, 48) and np.all(out == 77)


# ------------------------------------------------------------------ a saved model (untrained is enough)
@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    from fersearch.model import build_model, save_model

    torch.manual_seed(0)
    cfg = TrainConfig(filters=(8, 16, 16), dense=32)
    path = tmp_path_factory.mktemp("model") / "model.pt"
    save_model(path, build_model(cfg).eval(), cfg, meta={"note": "untrained"})
    return path


def test_predict_cli_prints_probabilities_per_emotion(saved_model, tmp_path):
    faces = np.random.default_rng(1).integers(0, 256, (3, 48, 48), dtype=np.uint8)
    paths = []
    for i, f in enumerate(faces):
        paths.append(tmp_path / f"f{i}.png")
        Image.fromarray(f).resize((96, 96)).convert("RGB").save(paths[-1])
    res = runner.invoke(app, ["predict", *map(str, paths), "--model", str(saved_model), "--json", "--no-detect"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["model"] == str(saved_model) and len(out["predictions"]) == 3 and out["no_face"] == []
    api = predict(paths, saved_model, detect=False)
    for p, a in zip(out["predictions"], api):
        assert list(p["probabilities"]) == list(LABELS)
        assert sum(p["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
        assert p["emotion"] == max(p["probabilities"], key=p["probabilities"].get) == a.emotion
        assert p["probabilities"] == pytest.approx(a.probabilities)
    text = runner.invoke(app, ["predict", str(paths[0]), "--model", str(saved_model), "--no-detect"])
    assert text.exit_code == 0 and api[0].emotion in text.stdout and "Neutral" in text.stdout


def test_predict_takes_an_array_and_a_loaded_module_too(saved_model):
    from fersearch.model import load_model

    faces = np.random.default_rng(2).integers(0, 256, (2, 48, 48), dtype=np.uint8)
    model, _, _ = load_model(saved_model)
    by_module = predict(faces, model, tta=True)
    by_path = predict(faces, saved_model, tta=True)
    assert [p.image for p in by_module] == ["image[0]", "image[1]"]
    assert [p.probabilities for p in by_module] == [p.probabilities for p in by_path]
    assert by_module[0].confidence == max(by_module[0].probabilities.values())
    with pytest.raises(DataError, match=r"shape \(N, 48, 48\)"):
        predict(faces[:, :40], model)


def test_default_model_is_the_newest_evaluated_experiments(saved_model, in_tmp):
    import shutil

    from fersearch.results.experiment import newest_best_model

    for name, created, evaluated in (("old", "2024-01-01T00:00:00", True), ("mid", "2024-06-01T00:00:00", True),
                                     ("new", "2025-01-01T00:00:00", False)):
        exp = in_tmp / "results" / name
        exp.mkdir(parents=True)
        (exp / "fersearch.json").write_text(json.dumps({"created": created}))
        if evaluated:
            (exp / "best").mkdir()
            shutil.copy(saved_model, exp / "best" / "model.pt")
    assert newest_best_model() == Path("results/mid/best/model.pt")
    assert newest_best_model(in_tmp / "results") == in_tmp / "results" / "mid" / "best" / "model.pt"
    img = in_tmp / "face.png"
    Image.fromarray(np.zeros((48, 48), dtype=np.uint8)).save(img)
    res = runner.invoke(app, ["predict", str(img), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["model"] == "results/mid/best/model.pt"


# ------------------------------------------------------------------ one-line errors through the CLI
def test_not_an_image_is_a_one_line_error(saved_model, tmp_path):
    bad = tmp_path / "notes.png"
    bad.write_text("this is not a png")
    assert_one_line_error(runner.invoke(app, ["predict", str(bad), "--model", str(saved_model)]),
                    str(bad), "cannot read image")
    assert_one_line_error(runner.invoke(app, ["predict", str(tmp_path / "missing.jpg"), "--model", str(saved_model)]),
                    "missing.jpg", "not found")


class _Payload:
    """Unpickling this runs code: exactly what weights_only=True must refuse."""

    def __reduce__(self):
        return (print, ("pwned",))


def test_bad_model_files_are_one_line_errors(tmp_path):
    img = tmp_path / "face.png"
    Image.fromarray(np.zeros((48, 48), dtype=np.uint8)).save(img)
    plain = tmp_path / "plain.pt"
    torch.save({"weights": torch.zeros(3)}, plain)
    assert_one_line_error(runner.invoke(app, ["predict", str(img), "--model", str(plain)]), "not a fersearch model")
    code = tmp_path / "code.pt"
    torch.save({"format": "fersearch-model", "payload": _Payload()}, code)
    res = runner.invoke(app, ["predict", str(img), "--model", str(code)])
    assert_one_line_error(res, "not a fersearch model")
    assert "pwned" not in res.output
    raw = tmp_path / "raw.pkl"
    raw.write_bytes(pickle.dumps(_Payload()))
    assert_one_line_error(runner.invoke(app, ["predict", str(img), "--model", str(raw)]), "not a fersearch model")


def test_real_cli_process_prints_only_the_error_line(tmp_path):
    """Through the installed entry point (no test harness between the CLI and stderr): a raw
    pickle with code in it is refused with one line and nothing else on stderr."""
    import subprocess
    import sys

    img = tmp_path / "face.png"
    Image.fromarray(np.zeros((48, 48), dtype=np.uint8)).save(img)
    raw = tmp_path / "raw.pkl"
    raw.write_bytes(pickle.dumps(_Payload()))
    res = subprocess.run([sys.executable, "-m", "fersearch", "predict", str(img), "--model", str(raw)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 1 and res.stdout == "" and "pwned" not in res.stderr
    assert res.stderr.count("\n") == 1 and res.stderr.startswith("error: ") and "not a fersearch model" in res.stderr


def test_no_model_anywhere_says_what_to_do(in_tmp):
    img = in_tmp / "face.png"
    Image.fromarray(np.zeros((48, 48), dtype=np.uint8)).save(img)
    assert_one_line_error(runner.invoke(app, ["predict", str(img)]), "best --evaluate", "--model")


# ------------------------------------------------------------------ against a real search
@pytest.mark.slow
def test_predict_agrees_with_evaluate_on_the_same_images(evaluated_experiment, tmp_path, monkeypatch):
    """Test images written as PNG files, predicted through the CLI with the default model (the
    newest experiment's best/model.pt), give evaluate's predictions and probabilities."""
    from fersearch.data import load

    best = evaluated_experiment / "best"
    meta = json.loads((evaluated_experiment / "fersearch.json").read_text())
    monkeypatch.chdir(evaluated_experiment.parent.parent)  # the project dir the search ran in
    fer = load(meta["data"]["path"], log=lambda *_: None)
    images, labels = fer.subset("test")
    preds = pd.read_csv(best / "predictions.csv", index_col="index")
    assert len(preds) == len(labels)
    assert preds["true"].tolist() == [LABELS[i] for i in labels]
    picks = list(range(0, len(labels), max(1, len(labels) // 12)))
    paths = []
    for i in picks:
        paths.append(tmp_path / f"test_{i}.png")
        Image.fromarray(images[i]).save(paths[-1])
    res = runner.invoke(app, ["predict", *map(str, paths), "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["model"].endswith("best/model.pt")
    for i, p in zip(picks, out["predictions"]):
        assert p["emotion"] == preds.loc[i, "predicted"]
        assert [p["probabilities"][n] for n in LABELS] == pytest.approx(
            [preds.loc[i, f"p_{n}"] for n in LABELS], abs=1e-6)
