"""`fersearch predict` on real photographs: faces found with OpenCV's Haar cascade, cropped as
FER2013's were, one row per face, --annotate, --no-detect, a 48x48 file taken as a crop, a photo
without a face (one line, exit code 3), and bad image files as one-line errors.

The photos are real ones shipped in scikit-image's wheel (the dev extra): astronaut.png (NASA
portrait of Eileen Collins, public domain), coffee.png (a cup, no face) and lfw_subset.npy
(Labeled Faces in the Wild crops: 100 faces, then 100 non-faces)."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import skimage
import torch
from PIL import Image
from typer.testing import CliRunner

from conftest import assert_one_line_error
from fersearch.cli import NO_FACE_EXIT, app
from fersearch.data.schema import LABELS

runner = CliRunner()
SAMPLES = Path(skimage.__file__).parent / "data"
ASTRONAUT, COFFEE = SAMPLES / "astronaut.png", SAMPLES / "coffee.png"


@pytest.fixture(scope="module")
def model_pt(tmp_path_factory):
    from fersearch.config import TrainConfig
    from fersearch.model import build_model, save_model

    torch.manual_seed(0)
    cfg = TrainConfig(filters=(8, 16, 16), dense=32, normalize="standardize")
    path = tmp_path_factory.mktemp("model") / "model.pt"
    save_model(path, build_model(cfg).eval(), cfg)
    return path


def _lfw_montage(path: Path, faces=(0, 1, 2), side=120) -> Path:
    """Real LFW faces (25x25, enlarged) side by side on grey: a group photo with known faces."""
    lfw = np.load(SAMPLES / "lfw_subset.npy", allow_pickle=False)
    canvas = np.full((side + 40, len(faces) * (side + 30) + 30), 128, np.uint8)
    for k, i in enumerate(faces):
        face = Image.fromarray((lfw[i] * 255).round().astype(np.uint8)).resize((side, side), Image.Resampling.BICUBIC)
        canvas[20:20 + side, 20 + k * (side + 30):20 + side + k * (side + 30)] = np.asarray(face)
    Image.fromarray(canvas).save(path)
    return path


def test_the_astronaut_portrait_gives_one_face_row_and_an_annotated_copy(model_pt, tmp_path):
    out = tmp_path / "annotated.png"
    res = runner.invoke(app, ["predict", str(ASTRONAUT), "--model", str(model_pt), "--json", "--annotate", str(out)])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.stdout)["predictions"]
    assert len(rows) == 1
    x, y, w, h = rows[0]["box"]
    assert 160 <= x <= 200 and 50 <= y <= 90 and 80 <= w <= 110 and w == h  # her face, not the suit or the flag
    assert rows[0]["face"] == 0 and list(rows[0]["probabilities"]) == list(LABELS)
    assert sum(rows[0]["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    drawn, photo = np.asarray(Image.open(out).convert("RGB")), np.asarray(Image.open(ASTRONAUT).convert("RGB"))
    assert drawn.shape == photo.shape
    changed = np.argwhere((drawn != photo).any(axis=2))
    assert changed[:, 1].min() >= x - 5 and changed[:, 1].max() <= x + w + 5  # only the box and its label
    text = runner.invoke(app, ["predict", str(ASTRONAUT), "--model", str(model_pt)])
    assert text.exit_code == 0 and f"{x},{y},{w},{h}" in text.stdout and rows[0]["emotion"] in text.stdout


def test_the_face_crop_is_the_detector_box_with_a_margin_and_the_api_matches_the_cli(model_pt):
    import fersearch
    from fersearch.data.image import crop_48, open_gray
    from fersearch.train.faces import MARGIN, detect_faces, fer_crop
    from fersearch.train.predict import face_crops

    gray = open_gray(ASTRONAUT).image
    (box,) = detect_faces(gray)
    left, top, right, bottom = fer_crop(box)
    assert right - left == round(box[2] * (1 + 2 * MARGIN))
    assert (left + right) / 2 == pytest.approx(box[0] + box[2] / 2, abs=1)  # centred on the detector's box
    crops, boxes = face_crops(ASTRONAUT)
    assert boxes == [box] and np.array_equal(crops[0], crop_48(gray, (left, top, right, bottom)))
    api = fersearch.predict([ASTRONAUT], model_pt)
    cli = json.loads(runner.invoke(app, ["predict", str(ASTRONAUT), "--model", str(model_pt), "--json"]).stdout)
    assert [p.to_dict() for p in api] == cli["predictions"]


def test_every_real_face_of_a_group_photo_is_a_row_largest_first(model_pt, tmp_path):
    photo = _lfw_montage(tmp_path / "group.png")
    res = runner.invoke(app, ["predict", str(photo), "--model", str(model_pt), "--json"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.stdout)["predictions"]
    assert [r["face"] for r in rows] == [0, 1, 2]
    areas = [r["box"][2] * r["box"][3] for r in rows]
    assert areas == sorted(areas, reverse=True)
    assert sorted(r["box"][0] // 150 for r in rows) == [0, 1, 2]  # one box per face, in its own slot


def test_no_detect_and_a_48x48_file_take_the_image_as_one_face(model_pt, tmp_path):
    res = runner.invoke(app, ["predict", str(ASTRONAUT), "--model", str(model_pt), "--json", "--no-detect"])
    assert res.exit_code == 0 and json.loads(res.stdout)["predictions"][0]["box"] == [0, 0, 512, 512]
    lfw = np.load(SAMPLES / "lfw_subset.npy", allow_pickle=False)
    crop = tmp_path / "crop48.png"
    Image.fromarray((lfw[3] * 255).round().astype(np.uint8)).resize((48, 48)).save(crop)
    res = runner.invoke(app, ["predict", str(crop), "--model", str(model_pt), "--json"])
    assert res.exit_code == 0 and json.loads(res.stdout)["predictions"][0]["box"] == [0, 0, 48, 48]


def test_a_photo_without_a_face_gets_one_line_and_its_own_exit_code(model_pt, tmp_path):
    out = tmp_path / "annotated.png"
    res = runner.invoke(app, ["predict", str(COFFEE), "--model", str(model_pt)])
    assert res.exit_code == NO_FACE_EXIT == 3 and res.stdout.strip() == ""
    lines = [ln for ln in res.stderr.splitlines() if ln.strip() and not ln.startswith("model:")]
    assert lines == [f"{COFFEE}: no face found; pass --no-detect if it is a face already cropped"]
    both = runner.invoke(app, ["predict", str(ASTRONAUT), str(COFFEE), "--model", str(model_pt), "--json"])
    assert both.exit_code == 3
    assert [r["image"] for r in json.loads(both.stdout)["predictions"]] == [str(ASTRONAUT)]
    assert json.loads(both.stdout)["no_face"] == [str(COFFEE)]
    assert not out.exists()


def _png_header(path: Path, w: int, h: int) -> Path:
    """A tiny PNG file whose header says w x h (a decompression bomb needs no more than this)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize("case", ["truncated", "not an image", "bomb 20000x20000", "bomb 8000x8000"])
def test_bad_image_files_are_one_line_errors_and_write_nothing(model_pt, tmp_path, case):
    bad = tmp_path / "photo.png"
    if case == "truncated":
        bad.write_bytes(ASTRONAUT.read_bytes()[:20_000])
        fragments = ("photo.png: cannot read image",)
    elif case == "not an image":
        bad.write_text("name,emotion\nx,happy\n")
        fragments = ("photo.png: cannot read image", "not an image file")
    else:
        side = int(case.split()[-1].split("x")[0])
        _png_header(bad, side, side)
        fragments = ("photo.png: image is", "decompression-bomb guard", "shrink it")
    out = tmp_path / "annotated.png"
    for flags in ([], ["--no-detect"]):
        res = runner.invoke(app, ["predict", str(bad), "--model", str(model_pt), "--annotate", str(out), *flags])
        assert_one_line_error(res, *fragments)
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["photo.png"]


def test_annotate_needs_one_image_and_an_image_file_name(model_pt, tmp_path):
    assert_one_line_error(runner.invoke(app, ["predict", str(ASTRONAUT), str(COFFEE), "--model", str(model_pt),
                                              "--annotate", str(tmp_path / "a.png")]), "exactly one image")
    assert_one_line_error(runner.invoke(app, ["predict", str(ASTRONAUT), "--model", str(model_pt),
                                              "--annotate", str(tmp_path / "a.txt")]), ".png or .jpg")
    assert list(tmp_path.iterdir()) == []
