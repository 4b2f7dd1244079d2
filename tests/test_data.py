"""The data layer: every format loads to the same arrays, FER+ votes, folder mapping by name,
one-line errors through the real CLI, the cache, the validation split and the default path."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from conftest import assert_one_line_error
from fersearch.cli import app
from fersearch.data import LABELS, USAGES, load, progress, resolve_data_path, synth
from fersearch.data.ferplus import FERPLUS_VOTES, ferplus_labels
from fersearch.data.writer import format_pixels, write_fer2013_csv

FOLDER = {0: "angry", 1: "disgust", 2: "fear", 3: "happy", 4: "sad", 5: "surprise", 6: "neutral"}


def _random_set(n: int = 56, seed: int = 1):
    """Random faces: every label in every Usage, and every image unique (first 8 pixels = its key)."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 48, 48), dtype=np.uint8)
    images.reshape(n, -1)[:, :2] = np.stack([np.arange(n) // 256, np.arange(n) % 256], 1)
    labels = np.arange(n) % 7
    usage = (np.arange(n) // 7) % 4  # 0,0,1,2 pattern per block of 7 -> Training twice as often
    usage = np.array([0, 0, 1, 2])[usage]
    return images, labels.astype(np.int64), usage


def _by_key(images, labels, split):
    return {img.tobytes(): (int(lab), int(s)) for img, lab, s in zip(images, labels, split)}


def _write_fer(path, images, labels, usage):
    return write_fer2013_csv(path, images, labels, [USAGES[u] for u in usage])


def _write_icml(path, images, labels, usage):
    pd.DataFrame({"emotion": labels, " Usage": [USAGES[u] for u in usage], " pixels": format_pixels(images)}
                 ).to_csv(path, index=False)


def _write_kaggle(folder, images, labels, usage):
    train = usage != 2
    pd.DataFrame({"emotion": labels[train], "pixels": format_pixels(images[train])}).to_csv(folder / "train.csv",
                                                                                          index=False)
    pd.DataFrame({"pixels": format_pixels(images[~train])}).to_csv(folder / "test.csv", index=False)


def _write_folders(root, images, labels, usage, ext=".png"):
    for i, (img, lab, u) in enumerate(zip(images, labels, usage)):
        d = root / ("test" if u == 2 else "train") / FOLDER[int(lab)]
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(d / f"{i:05d}{ext}")


def _cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---- every format, same arrays ----------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["fer2013", "icml_face_data", "kaggle-challenge", "image-folders"])
def test_every_format_loads_to_the_same_images_and_labels(tmp_path, fmt):
    images, labels, usage = _random_set()
    if fmt == "fer2013":
        path = _write_fer(tmp_path / "fer2013.csv", images, labels, usage)
    elif fmt == "icml_face_data":
        _write_icml(path := tmp_path / "icml_face_data.csv", images, labels, usage)
    elif fmt == "kaggle-challenge":
        _write_kaggle(path := tmp_path, images, labels, usage)
    else:
        _write_folders(path := tmp_path, images, labels, usage)
    data = load(path, log=lambda m: None)
    assert data.format == fmt
    assert data.images.dtype == np.uint8 and data.images.shape == (len(images), 48, 48)
    assert data.labels.dtype == np.int64 and data.split.dtype == np.int8
    got = _by_key(data.images, data.labels, data.split)
    has_public_test = fmt in ("fer2013", "icml_face_data")
    want = _by_key(images, labels, usage)
    if not has_public_test:  # PublicTest rows went into train; val is carved out of train: compare "train or val"
        want, got = ({k: (lab, 2 if s == 2 else 0) for k, (lab, s) in d.items()} for d in (want, got))
    if fmt == "kaggle-challenge":  # test.csv has no labels
        want = {k: (-1 if s == 2 else lab, s) for k, (lab, s) in want.items()}
    assert got == want
    assert (data.split == 1).any()


def test_kaggle_test_csv_has_no_labels_and_says_so(tmp_path):
    images, labels, usage = _random_set()
    _write_kaggle(tmp_path, images, labels, usage)
    data = load(tmp_path / "train.csv", log=lambda m: None)  # the file: test.csv found beside it
    assert data.format == "kaggle-challenge"
    x, y = data.subset("test")
    assert len(x) == (usage == 2).sum() and (y == -1).all()
    assert data.labeled("train") and data.labeled("val") and not data.labeled("test")
    assert data.counts()["test"]["unlabeled"] == len(x)
    assert any("no labels" in n for n in data.notes)
    result = _cli("data", "info", tmp_path)
    assert result.exit_code == 0 and "without labels" in result.stdout


def test_folders_map_emotion_by_name_not_alphabetical_index(tmp_path):
    # sorted(['neutral', 'sad', 'surprise']) would give 0, 1, 2; the names mean 6, 4, 5.
    img = np.full((48, 48), 7, np.uint8)
    for value, name in ((60, "Neutral"), (40, "sad"), (50, "SURPRISE")):
        (tmp_path / "train" / name).mkdir(parents=True)
        Image.fromarray(img + value).save(tmp_path / "train" / name / "a.png")
        Image.fromarray(img + value + 1).save(tmp_path / "train" / name / "b.jpg", quality=100)
    data = load(tmp_path, log=lambda m: None)
    by_value = {int(round(im.mean())) - 7: int(lab) for im, lab in zip(data.images, data.labels)}
    assert by_value == {60: 6, 61: 6, 40: 4, 41: 4, 50: 5, 51: 5}


def test_folders_resize_only_when_asked_and_colour_becomes_gray(tmp_path):
    images, labels, usage = _random_set(14)
    _write_folders(tmp_path, images, labels, usage)
    Image.new("RGB", (64, 64), (200, 10, 10)).save(tmp_path / "train" / "happy" / "big.png")
    assert_one_line_error(_cli("data", "info", tmp_path), "big.png: image is 64x64", "--resize")
    data = load(tmp_path, resize=True, log=lambda m: None)
    assert data.images.shape == (15, 48, 48)
    assert any("resized 1 image" in n for n in data.notes) and any("grayscale" in n for n in data.notes)


# ---- FER+ -------------------------------------------------------------------------------------------------------


def _votes(**kw):
    row = dict.fromkeys(FERPLUS_VOTES, 0)
    row.update(kw)
    return [row[c] for c in FERPLUS_VOTES]


def test_ferplus_strict_majority_on_hand_made_rows():
    rows = [
        (_votes(neutral=6, happiness=4), "a.png", 6),  # 6 of 10: neutral
        (_votes(happiness=10), "b.png", 3),
        (_votes(sadness=5, neutral=5), "c.png", -1),  # a tie is no majority
        (_votes(anger=4, disgust=3, fear=3), "d.png", -1),  # plurality, not majority
        (_votes(contempt=7, anger=3), "e.png", -1),  # no FER2013 class
        (_votes(unknown=6, fear=4), "f.png", -1),
        (_votes(nf=10), "g.png", -1),
        (_votes(surprise=9, fear=1), "", -1),  # no image name: FER+ says not a face
        (_votes(fear=3, surprise=1), "h.png", 2),  # 3 of 4 votes
        (_votes(disgust=6, anger=4), "i.png", 1),
    ]
    labels, skipped = ferplus_labels(np.array([r[0] for r in rows]), np.array([r[1] for r in rows]))
    assert labels.tolist() == [r[2] for r in rows]
    assert skipped == {"no image name": 1, "no majority": 2, "majority contempt": 1, "majority unknown": 1,
                       "majority NF": 1}


def test_ferplus_folder_relabels_fer2013_rows_and_skips_with_a_count(tmp_path):
    images, labels, usage = _random_set(8)
    usage = np.array([0, 0, 0, 0, 1, 1, 2, 2])
    _write_fer(tmp_path / "fer2013.csv", images, labels, usage)
    votes = [_votes(happiness=8, neutral=2), _votes(nf=10), _votes(sadness=6, anger=4), _votes(anger=9, fear=1),
             _votes(contempt=10), _votes(fear=7, surprise=3), _votes(surprise=10), _votes(neutral=10)]
    names = ["a.png", "b.png", "", "d.png", "e.png", "f.png", "g.png", "h.png"]
    df = pd.DataFrame(votes, columns=["neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear",
                                      "contempt", "unknown", "NF"])
    df.insert(0, "Image name", names)
    df.insert(0, "Usage", [USAGES[u] for u in usage])
    df.to_csv(tmp_path / "fer2013new.csv", index=False)
    data = load(tmp_path, log=lambda m: None)
    assert data.format == "ferplus"
    assert data.labels.tolist() == [3, 0, 2, 5, 6]
    assert data.split.tolist() == [0, 0, 1, 2, 2]
    assert (data.images == images[[0, 3, 5, 6, 7]]).all()
    note = next(n for n in data.notes if n.startswith("FER+"))
    assert "kept 5 of 8 rows, skipped 3" in note and "1 no image name" in note and "1 majority NF" in note
    # the votes file alone finds its fer2013.csv beside it
    assert load(tmp_path / "fer2013new.csv", log=lambda m: None).labels.tolist() == [3, 0, 2, 5, 6]
    # fer2013.csv named explicitly means the original labels
    assert load(tmp_path / "fer2013.csv", log=lambda m: None).format == "fer2013"


# ---- bad inputs: one line, exit 1, no traceback, files untouched ----------------------------------------------------


def _good_lines(n=6):
    images, labels, usage = _random_set(n)
    return ["emotion,pixels,Usage"] + [f"{lab},{px},{USAGES[u]}" for lab, px, u in
                                       zip(labels, format_pixels(images), usage)]


def _bad_csv(mutate):
    lines = _good_lines()
    mutate(lines)
    return "\n".join(lines) + "\n"


def _set_field(lines, row, index, value):
    fields = lines[row - 1].split(",")
    fields[index] = value
    lines[row - 1] = ",".join(fields)


def _set_pixel(lines, row, value):
    fields = lines[row - 1].split(",")
    px = fields[1].split(" ")
    px[5] = value
    fields[1] = " ".join(px)
    lines[row - 1] = ",".join(fields)


BAD_CSVS = {
    "wrong pixel count": (lambda ls: _set_field(ls, 3, 1, ls[2].split(",")[1].rsplit(" ", 1)[0]),
                          ["row 3 (header = row 1)", "column 'pixels'", "2303 pixel values, expected 2304"]),
    "non-numeric pixel": (lambda ls: _set_pixel(ls, 4, "abc"), ["row 4", "pixel 6 is 'abc', not a whole number"]),
    "pixel above 255": (lambda ls: _set_pixel(ls, 2, "256"), ["row 2", "pixel 6 is 256, outside 0-255"]),
    "negative pixel": (lambda ls: _set_pixel(ls, 5, "-3"), ["row 5", "pixel 6 is -3, outside 0-255"]),
    "unknown label": (lambda ls: _set_field(ls, 6, 0, "7"), ["row 6", "column 'emotion'", "emotion is '7'", "0-6"]),
    "unknown usage": (lambda ls: _set_field(ls, 3, 2, "Train"), ["row 3", "Usage is 'Train'", "PublicTest"]),
    "missing column": (lambda ls: ls.__setitem__(0, "emotion,pixel,Usage"), ["missing column(s) pixels",
                                                                              "header row is 'emotion,pixel,Usage'"]),
    "header only": (lambda ls: ls.__delitem__(slice(1, None)), ["header only, no image rows"]),
    "ragged row": (lambda ls: ls.__setitem__(2, ls[2] + ",extra"), ["row 3", "4 fields, the header has 3"]),
    "no training rows": (lambda ls: [_set_field(ls, r, 2, "PublicTest") for r in range(2, len(ls) + 1)],
                         ["no training rows"]),
}


@pytest.mark.parametrize("case", list(BAD_CSVS))
def test_bad_csv_gives_one_line_error_and_exit_1(tmp_path, case):
    mutate, expected = BAD_CSVS[case]
    path = tmp_path / "fer2013.csv"
    path.write_text(_bad_csv(mutate))
    before = _sha(path)
    err = assert_one_line_error(_cli("data", "info", path), *expected)
    assert str(path) in err or case == "no training rows"
    assert _sha(path) == before and sorted(os.listdir(tmp_path)) == ["fer2013.csv"]


@pytest.mark.parametrize("case", ["empty file", "missing path", "only test.csv", "unreadable image", "not a csv",
                                  "unknown emotion folder", "empty folder"])
def test_other_bad_inputs_give_one_line_error(tmp_path, case):
    target = tmp_path / "x.csv"
    if case == "empty file":
        target.write_bytes(b""), (expected := "file is empty")
    elif case == "missing path":
        target, expected = tmp_path / "nope.csv", "no such file or folder"
    elif case == "only test.csv":
        target = tmp_path / "test.csv"
        pd.DataFrame({"pixels": format_pixels(_random_set(3)[0])}).to_csv(target, index=False)
        expected = "no training rows"
    elif case == "unreadable image":
        _write_folders(tmp_path, *_random_set(7))
        (tmp_path / "train" / "sad" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
        target, expected = tmp_path, "broken.png: cannot read image"
    elif case == "not a csv":
        target.write_bytes(bytes(range(256)) * 4)
        expected = "not a text CSV"
    elif case == "unknown emotion folder":
        _write_folders(tmp_path, *_random_set(7))
        (tmp_path / "train" / "contempt").mkdir()
        Image.fromarray(np.zeros((48, 48), np.uint8)).save(tmp_path / "train" / "contempt" / "c.png")
        target, expected = tmp_path, "folder name 'contempt' is not an emotion"
    else:
        target, expected = tmp_path, "no FER2013 data found"
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert_one_line_error(_cli("data", "info", target), expected)
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


# ---- cache ------------------------------------------------------------------------------------------------------


def test_cache_second_load_equals_first_without_parsing(tmp_path):
    path = _write_fer(tmp_path / "fer2013.csv", *_random_set())
    logs1, logs2 = [], []
    first = load(path, log=logs1.append)
    assert (tmp_path / "fer2013.csv.fercache.npz").is_file()
    second = load(path, log=logs2.append)
    assert any(m.startswith("reading ") for m in logs1) and not any(m.startswith("reading ") for m in logs2)
    for a in ("images", "labels", "split"):
        assert np.array_equal(getattr(first, a), getattr(second, a))
    assert (first.sha256, first.notes, first.format) == (second.sha256, second.notes, second.format)
    assert first.sha256 == _sha(path)
    # touched but unchanged: the stamp differs, the hash matches, no parsing
    os.utime(path, ns=(1, 1))
    logs3 = []
    assert np.array_equal(load(path, log=logs3.append).images, first.images)
    assert not any(m.startswith("reading ") for m in logs3)


def test_changed_source_invalidates_the_cache(tmp_path):
    images, labels, usage = _random_set()
    path = _write_fer(tmp_path / "fer2013.csv", images, labels, usage)
    load(path, log=lambda m: None)
    labels2 = (labels + 1) % 7
    _write_fer(path, images, labels2, usage)  # same size, new content
    data = load(path, log=lambda m: None)
    assert np.array_equal(data.labels, labels2)
    assert data.sha256 == _sha(path)


def test_corrupt_or_unwritable_cache_falls_back_to_parsing(tmp_path):
    path = _write_fer(tmp_path / "fer2013.csv", *_random_set())
    cache = tmp_path / "fer2013.csv.fercache.npz"
    cache.write_bytes(b"PK\x03\x04 garbage")
    logs = []
    data = load(path, log=logs.append)
    assert any("ignoring unreadable cache" in m for m in logs) and data.n == 56
    assert load(path, log=lambda m: None).n == 56  # rewritten and readable again
    cache.unlink()
    cache.mkdir()  # a cache path that cannot be written (works even as root, unlike chmod)
    logs = []
    assert load(path, log=logs.append).n == 56
    assert any("cannot write the cache" in m for m in logs)


def test_no_cache_option_writes_nothing(tmp_path):
    path = _write_fer(tmp_path / "fer2013.csv", *_random_set())
    load(path, cache=False, log=lambda m: None)
    assert sorted(os.listdir(tmp_path)) == ["fer2013.csv"]


def test_unwritable_data_folder_still_loads_and_says_why_once(tmp_path, monkeypatch):
    path = _write_fer(tmp_path / "fer2013.csv", *_random_set())

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("fersearch.io.tempfile.mkstemp", refuse)  # a read-only folder, as root too
    logs = []
    assert load(path, log=logs.append).n == 56
    assert [m for m in logs if "cache" in m] == [
        f"cannot write the cache {tmp_path / 'fer2013.csv.fercache.npz'} (Permission denied); "
        f"the next load will read the source again"]
    assert sorted(os.listdir(tmp_path)) == ["fer2013.csv"]


# ---- progress of a first load -----------------------------------------------------------------------------------

_READ_LINES = [r"reading \S+ \(fer2013, \d+ MB\) \.\.\.", r"read 56 images in \d+\.\d s"]


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _bar_on(monkeypatch) -> io.StringIO:
    """Where the progress bar draws, as a terminal would see it."""
    from rich.console import Console

    screen = io.StringIO()
    monkeypatch.setattr(progress, "stderr_console", lambda: Console(file=screen, force_terminal=True, width=100))
    return screen


def test_not_a_terminal_first_load_prints_only_the_usual_lines(tmp_path):
    path = _write_fer(tmp_path / "fer2013.csv", *_random_set())
    r = _cli("data", "info", path, "--json")  # CliRunner's stderr is not a terminal
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["n"] == 56  # stdout: the JSON and nothing else
    lines = r.stderr.splitlines()
    assert len(lines) == len(_READ_LINES), lines  # the PublicTest rows are val: no split line either
    for line, pattern in zip(lines, _READ_LINES):
        assert re.fullmatch(pattern, line), (pattern, line)
    assert "\x1b" not in r.stderr and "rows parsed" not in r.stderr


@pytest.mark.parametrize("fmt", ["fer2013", "image-folders"])
def test_terminal_first_load_draws_a_transient_bar_cached_load_none(tmp_path, monkeypatch, fmt):
    screen = _bar_on(monkeypatch)
    monkeypatch.setattr(sys, "stderr", _Terminal())
    images, labels, usage = _random_set()
    if fmt == "fer2013":
        path, what = _write_fer(tmp_path / "fer2013.csv", images, labels, usage), "fer2013.csv: rows parsed"
    else:
        _write_folders(path := tmp_path, images, labels, usage)
        what = "image files read"
    load(path)  # default log on a terminal: the bar is on
    drawn = screen.getvalue()
    assert what in drawn and "56/56" in drawn and "\x1b[" in drawn
    screen.truncate(0), screen.seek(0)
    load(path)  # cached: nothing parsed, nothing drawn
    assert screen.getvalue() == ""


def test_bar_follows_the_callers_choice(tmp_path, monkeypatch):
    screen = _bar_on(monkeypatch)
    monkeypatch.setattr(sys, "stderr", _Terminal())
    path = _write_fer(tmp_path / "fer2013.csv", *_random_set())
    load(path, log=lambda m: None, cache=False)  # a caller with its own log (e.g. a quiet one): no bar
    assert screen.getvalue() == ""
    load(path, log=lambda m: None, cache=False, progress=True)
    assert "rows parsed" in screen.getvalue()
    screen.truncate(0), screen.seek(0)
    load(path, cache=False, progress=False)
    assert screen.getvalue() == ""


# ---- validation split -------------------------------------------------------------------------------------------


def test_carved_validation_is_stratified_seeded_and_recorded(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (700, 48, 48), dtype=np.uint8)
    labels = np.repeat(np.arange(7), 100)
    path = _write_fer(tmp_path / "fer2013.csv", images, labels, np.zeros(700, int))
    logs = []
    a = load(path, log=logs.append)
    assert np.bincount(a.labels[a.split == 1], minlength=7).tolist() == [10] * 7
    assert any("no PublicTest rows" in m and "seed 0" in m for m in logs)
    assert any("70 of 700 training images" in n for n in a.notes)
    assert np.array_equal(load(path, log=lambda m: None).split, a.split)
    b = load(path, seed=1, val_fraction=0.2, log=lambda m: None)
    assert (b.split == 1).sum() == 140 and not np.array_equal(b.split, a.split)


# ---- default data, CLI ------------------------------------------------------------------------------------------


def test_default_is_fer2013_csv_else_generated_synthetic(in_tmp, monkeypatch):
    monkeypatch.setattr(synth, "DEFAULT_SYNTH_N", 140)
    logs = []
    path = resolve_data_path(log=logs.append)
    assert path == Path("data/synthetic/fer2013.csv") and path.is_file()
    assert any("generating the synthetic default" in m for m in logs)
    assert any("SYNTHETIC" in m for m in logs)
    data = load(log=lambda m: None)
    assert data.synthetic and data.n == 140 and "synthetic" in data.notes[0]
    logs = []
    resolve_data_path(log=logs.append)
    assert not any("generating" in m for m in logs)  # generated once
    _write_fer(Path("data/fer2013.csv"), *_random_set())
    assert resolve_data_path(log=lambda m: None) == Path("data/fer2013.csv")
    assert not load(log=lambda m: None).synthetic


def test_cli_synth_info_json_and_preview(in_tmp):
    r = _cli("data", "synth", "--out", "s", "--n", "140", "--seed", "3")
    assert r.exit_code == 0, r.output
    first = _sha(in_tmp / "s" / "fer2013.csv")
    assert _cli("data", "synth", "--out", "s", "--n", "140", "--seed", "3").exit_code == 0
    assert _sha(in_tmp / "s" / "fer2013.csv") == first  # same seed, same file
    r = _cli("data", "info", "s", "--json")
    assert r.exit_code == 0, r.output
    info = json.loads(r.stdout)
    assert info["format"] == "fer2013" and info["synthetic"] and info["n"] == 140 and info["sha256"] == first
    assert sum(sum(c.values()) for c in info["counts"].values()) == 140
    assert set(info["counts"]["val"]) == set(LABELS)
    r = _cli("data", "info", "--data", "s")
    assert r.exit_code == 0 and "SYNTHETIC" in r.stdout and "Disgust" in r.stdout
    r = _cli("data", "preview", "s", "--out", "out/grid.png", "--per-class", "3")
    assert r.exit_code == 0, r.output
    png = Image.open(in_tmp / "out" / "grid.png")
    assert png.format == "PNG" and png.size[0] > 200
    assert_one_line_error(_cli("data", "preview", "s", "--split", "nope"), "--split",
                          "'nope' is not one of 'train', 'val', 'test'")
