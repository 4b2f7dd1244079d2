"""Hostile input, generated here, through the real CLI in-process: images (thin, bombs,
short pixel data, odd modes), model files (ONNX of the wrong shape, type, names or tags, pickles
with payloads, oversized configs, NaN weights), unwritable outputs, tracker URIs, flags that mean
nothing. Each case: one `error:` line (or the command's own one-line outcome), the exit code, no
traceback, and the checksums of a results folder and the inputs the same before and after."""

from __future__ import annotations

import json
import os
import pickle
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from conftest import Payload, assert_one_line_error, checksums
from fersearch.cli import app

runner = CliRunner()


# ------------------------------------------------------------------ the files, made by the tests
@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A project: a small model.pt and model.onnx, a face image, an experiment folder with a plot."""
    from PIL import Image

    from fersearch.config import TrainConfig
    from fersearch.deploy import export_onnx
    from fersearch.model import build_model, save_model

    root = tmp_path_factory.mktemp("hostile")
    cfg = TrainConfig.from_dict({"blocks": 2, "filters": [8, 16], "dropout": [0.0, 0.0], "dense": 16})
    model = build_model(cfg).eval()
    save_model(root / "model.pt", model, cfg, {"source": "test"})
    export_onnx(model, root / "model.onnx", cfg)
    rng = np.random.default_rng(0)
    Image.fromarray((rng.random((60, 50)) * 255).astype("uint8")).save(root / "face.png")
    exp = root / "results" / "exp"
    exp.mkdir(parents=True)
    (exp / "fersearch.json").write_text(json.dumps({"name": "exp"}))
    (exp / "plot.png").write_bytes((root / "face.png").read_bytes())
    return {"root": root, "cfg": cfg, "model": model}


def _payload(root: Path, key: str, value) -> Path:
    payload = torch.load(root / "model.pt", weights_only=True)
    payload[key] = value
    path = root / f"bad-{key}-{type(value).__name__}.pt"
    torch.save(payload, path)
    return path


def _onnx(root: Path, name: str, module: torch.nn.Module, output: str = "probabilities", tags: dict | None = None):
    import onnx

    from fersearch.deploy import ONNX_FORMAT

    path = root / f"{name}.onnx"
    x = torch.randint(0, 256, (2, 1, 48, 48), dtype=torch.uint8)
    torch.onnx.export(module.eval(), (x,), str(path), dynamo=False, opset_version=17, input_names=["pixels"],
                      output_names=[output], dynamic_axes={"pixels": {0: "n"}, output: {0: "n"}})
    proto = onnx.load(str(path))
    for k, v in {"format": ONNX_FORMAT, **(tags or {})}.items():
        prop = proto.metadata_props.add()
        prop.key, prop.value = k, v
    onnx.save(proto, str(path))
    return path


class Head(torch.nn.Module):
    def __init__(self, classes: int = 7, kind: str = "float"):
        super().__init__()
        self.classes, self.kind = classes, kind
        self.lin = torch.nn.Linear(48 * 48, classes)

    def forward(self, pixels):
        out = torch.softmax(self.lin(pixels.float().flatten(1)), 1)
        if self.kind == "int":
            return out.argmax(1, keepdim=True).expand(-1, self.classes).to(torch.int64)
        if self.kind == "nan":
            return out * float("nan")
        return out


def _png_short(path: Path, w: int = 64, h: int = 7000, rows: int = 10) -> Path:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    raw = b"".join(b"\0" + bytes((x * 3 + y) % 256 for x in range(w)) for y in range(rows))
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw))
                     + chunk(b"IEND", b""))
    return path


def _png_bomb(path: Path) -> Path:
    """A header declaring 30,000 x 30,000 pixels over a few bytes of data."""
    return _png_short(path, w=30_000, h=30_000, rows=1)


def _image(root: Path, name: str, size: tuple[int, int], mode: str = "L", fmt: str = "PNG") -> Path:
    from PIL import Image

    arr = (np.random.default_rng(1).random((size[1], size[0])) * 255).astype("uint8")
    img = Image.fromarray(arr).convert(mode) if mode not in ("I;16", "F") else (
        Image.fromarray(arr.astype(np.uint16) * 200) if mode == "I;16" else Image.fromarray(arr.astype(np.float32)))
    path = root / f"{name}.{fmt.lower()}"
    img.save(path, format=fmt)
    return path


# ------------------------------------------------------------------ cases: (args, exit code, fragments)
def _cases(w: dict) -> dict:
    root, exp = w["root"], w["root"] / "results" / "exp"
    pt, onnx_file, face = str(root / "model.pt"), str(root / "model.onnx"), str(root / "face.png")
    big = {**w["cfg"].to_dict(), "filters": [512, 512, 512], "blocks": 3, "dropout": [0, 0, 0], "dense": 4096}
    nan_state = {k: v * float("nan") if v.is_floating_point() else v for k, v in w["model"].state_dict().items()}
    marker = root / "PWNED"
    (root / "afile").write_text("x")
    (root / "adir.png").mkdir(exist_ok=True)
    predict = ["predict", "--model", pt, "--no-detect"]
    return {
        # images
        "thin 2049x1, detect": (["predict", "--model", pt, str(_image(root, "thin1", (2049, 1)))], 3, ["no face"]),
        "thin 1x3000, detect": (["predict", "--model", pt, str(_image(root, "thin2", (1, 3000)))], 3, ["no face"]),
        "thin 3000x30, detect": (["predict", "--model", pt, str(_image(root, "thin3", (3000, 30)))], 3, ["no face"]),
        "short PNG": ([*predict, str(_png_short(root / "short.png"))], 1, ["short.png", "truncated"]),
        "short PNG, detect": (["predict", "--model", pt, str(root / "short.png")], 1, ["truncated"]),
        "bomb": ([*predict, str(_png_bomb(root / "bomb.png"))], 1, ["bomb.png", "megapixels"]),
        "not an image": ([*predict, pt], 1, ["cannot read image"]),
        "empty file": ([*predict, str(_empty(root / "empty.png"))], 1, ["cannot read image"]),
        **{f"mode {m}": ([*predict, str(_image(root, f"mode-{m.replace(';', '')}", (40, 30), m, "TIFF"))], 0, [])
           for m in ("1", "P", "CMYK", "LA", "RGBA", "I;16", "F", "I")},
        "mode YCbCr jpeg": ([*predict, str(_image(root, "ycc", (40, 30), "RGB", "JPEG"))], 0, []),
        # model files
        "pt config list": ([*predict, "--model", str(_payload(root, "config", [1, 2])), face], 1, ["'config'"]),
        "pt config str": ([*predict, "--model", str(_payload(root, "config", "x")), face], 1, ["'config'"]),
        "pt meta list": ([*predict, "--model", str(_payload(root, "meta", [1])), face], 1, ["'meta'"]),
        "pt meta str": ([*predict, "--model", str(_payload(root, "meta", "m")), face], 1, ["'meta'"]),
        "pt oversized config": ([*predict, "--model", str(_payload(root, "config", big)), face], 1,
                                ["weights do not match its config"]),
        "pt NaN weights": ([*predict, "--model", str(_payload(root, "state_dict", nan_state)), face], 1, ["NaN"]),
        "pt pickle payload": ([*predict, "--model", str(_pickled(root, marker)), face], 1, ["not a fersearch model"]),
        "onnx renamed output": ([*predict, "--model", str(_onnx(root, "renamed", Head(), output="scores")), face], 1,
                                ["'scores'"]),
        "onnx 5 classes": ([*predict, "--model", str(_onnx(root, "five", Head(5))), face], 1, ["not (N, 7)"]),
        "onnx int output": ([*predict, "--model", str(_onnx(root, "int", Head(kind="int"))), face], 1,
                            ["tensor(int64)"]),
        "onnx NaN output": ([*predict, "--model", str(_onnx(root, "nan", Head(kind="nan"))), face], 1,
                            ["NaN or infinite"]),
        "onnx broken config tag": ([*predict, "--model", str(_onnx(root, "tag", Head(), tags={"config": "{no"})), face],
                                   1, ["not valid JSON"]),
        "onnx config tag a list": ([*predict, "--model", str(_onnx(root, "tag2", Head(), tags={"config": "[1]"})),
                                    face], 1, ["config tag is a list"]),
        "onnx as exported (control)": ([*predict, "--model", onnx_file, face], 0, []),
        "onnx garbage": ([*predict, "--model", str(_garbage(root / "junk.onnx")), face], 1, ["not an ONNX model"]),
        # output paths
        "annotate onto the input": ([*predict, face, "--annotate", face], 1, ["is one of the inputs"]),
        "annotate onto a folder": ([*predict, face, "--annotate", str(root / "adir.png")], 1, ["is a folder"]),
        "annotate under a file": ([*predict, face, "--annotate", str(root / "afile" / "x.png")], 1, ["is a file"]),
        "annotate into /proc": ([*predict, face, "--annotate", "/proc/x.png"], 1, ["cannot write in /proc"]),
        "annotate .gif": ([*predict, face, "--annotate", str(root / "x.gif")], 1, ["--annotate"]),
        "annotate into an experiment": ([*predict, face, "--annotate", str(exp / "plot.png")], 1,
                                        ["inside the results folder"]),
        "compare --out onto a plot": (["compare", "a", "b", "--out", str(exp / "plot.png")], 1,
                                      ["inside the results folder"]),
        "compare --out a folder": (["compare", "a", "b", "--out", str(root / "adir.png")], 1, ["is a folder"]),
        "compare --out under a file": (["compare", "a", "b", "--out", str(root / "afile" / "c.png")], 1, ["is a file"]),
        "compare --out /proc": (["compare", "a", "b", "--out", "/proc/c.png"], 1, ["cannot write in /proc"]),
        "compare --out .txt": (["compare", "a", "b", "--out", str(root / "c.txt")], 1, ["suffix"]),
        # flags that mean nothing
        **{f"best {flag} without --evaluate": (["best", "exp", "--results", str(root / "results"), *flag.split()], 1,
                                               ["only appl", "--evaluate"])
           for flag in ("--ties 0", "--ties 3", "--seeds 2", "--epochs 3", "--tta", "--split val")},
    }


def _empty(path: Path) -> Path:
    path.write_bytes(b"")
    return path


def _garbage(path: Path) -> Path:
    path.write_bytes(os.urandom(3000))
    return path


def _pickled(root: Path, marker: Path) -> Path:
    path = root / "payload.pt"
    path.write_bytes(pickle.dumps({"format": "fersearch-model", "config": Payload(marker)}))
    return path


HOSTILE_IDS = [
    "thin 2049x1, detect", "thin 1x3000, detect", "thin 3000x30, detect", "short PNG", "short PNG, detect", "bomb",
    "not an image", "empty file", *[f"mode {m}" for m in ("1", "P", "CMYK", "LA", "RGBA", "I;16", "F", "I")],
    "mode YCbCr jpeg", "pt config list", "pt config str", "pt meta list", "pt meta str", "pt oversized config",
    "pt NaN weights", "pt pickle payload", "onnx renamed output", "onnx 5 classes", "onnx int output",
    "onnx NaN output", "onnx broken config tag", "onnx config tag a list", "onnx as exported (control)",
    "onnx garbage", "annotate onto the input",
    "annotate onto a folder", "annotate under a file", "annotate into /proc", "annotate .gif",
    "annotate into an experiment", "compare --out onto a plot", "compare --out a folder",
    "compare --out under a file", "compare --out /proc", "compare --out .txt",
    *[f"best {flag} without --evaluate" for flag in ("--ties 0", "--ties 3", "--seeds 2", "--epochs 3", "--tta",
                                                     "--split val")],
]


@pytest.fixture(scope="module")
def cases(world):
    return _cases(world)


@pytest.mark.parametrize("hostile_case", HOSTILE_IDS)
def test_hostile_input_is_one_line_and_changes_nothing(world, cases, hostile_case, monkeypatch):
    if hostile_case == "annotate into /proc" and not Path("/proc").is_dir():
        pytest.skip("no /proc here")
    args, code, fragments = cases[hostile_case]
    root = world["root"]
    monkeypatch.chdir(root)
    before = checksums(root)
    res = runner.invoke(app, args)
    if code == 1:
        assert_one_line_error(res, *fragments)
    else:
        assert res.exit_code == code, res.output
        assert "Traceback" not in res.output, res.output
        for fragment in fragments:
            assert fragment in res.stderr, res.stderr
        if code == 3:
            assert len([ln for ln in res.stderr.splitlines() if "no face" in ln]) == 1, res.stderr
    after = checksums(root)
    assert {k: v for k, v in after.items() if k in before} == before, "an existing file changed"
    assert not (root / "PWNED").exists(), "a pickle ran"
    assert not any(".fersearch-probe" in k for k in after), "a probe file was left"


def test_the_case_ids_match_the_cases(world, cases):
    assert set(cases) == set(HOSTILE_IDS)


# ------------------------------------------------------------------ tracker URIs
URIS = {"": "is empty", "foo://x": "unknown scheme", "file:///tmp/mlruns": "file store", "/tmp/mlruns": "file store",
        "sqlite:///": "no database file", "sqlite:////proc/m.db": "cannot write in /proc",
        "sqlite:////nonexistent-dir-x/m.db": "does not exist"}


@pytest.mark.parametrize("uri", list(URIS), ids=[u or "empty" for u in URIS])
def test_a_tracker_uri_is_checked_before_the_search_in_one_line(in_tmp, ray_never_started, fast_space, uri):
    import time

    t0 = time.monotonic()
    res = runner.invoke(app, ["tune", "--trials", "1", "--space", str(fast_space), "--mlflow-uri", uri])
    assert_one_line_error(res, "--mlflow-uri", URIS[uri])
    assert time.monotonic() - t0 < 10
    assert not (in_tmp / "results").exists() or not any((in_tmp / "results").iterdir())


def test_a_read_only_sqlite_folder_is_refused_without_mlflows_retries(tmp_path):
    from fersearch.errors import FersearchError
    from fersearch.search.tracking import check_uri

    with pytest.raises(FersearchError, match="cannot write in /sys|does not exist"):
        check_uri("sqlite:////sys/m.db")
    check_uri(f"sqlite:///{tmp_path}/m.db")  # a folder of ours: fine


# ------------------------------------------------------------------ JSON and the signing key
def test_json_output_is_always_valid_json():
    from fersearch.outputs import json_text

    text = json_text({"a": float("nan"), "b": [float("inf"), -float("inf"), 1.5], "c": np.float32("nan"),
                      "d": torch.tensor(2.0), "e": Path("/x")})
    assert json.loads(text) == {"a": None, "b": [None, None, 1.5], "c": None, "d": 2.0, "e": "/x"}
    assert "NaN" not in text and "Infinity" not in text


def test_the_signing_key_is_private_and_a_signature_needs_it(tmp_path, monkeypatch):
    from fersearch.errors import ResultsError
    from fersearch.search import pickles

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    exp = tmp_path / "exp"
    exp.mkdir()
    (exp / "tuner.pkl").write_bytes(pickle.dumps({"x": 1}))
    (exp / "trial_a").mkdir()
    (exp / "trial_a" / "params.pkl").write_bytes(pickle.dumps({"lr": 0.1}))
    pickles.sign(exp)
    key = pickles.secret_path()
    assert key.stat().st_mode & 0o777 == 0o600 and key.parent.stat().st_mode & 0o777 == 0o700
    pickles.verify(exp, "exp")
    key.write_bytes(os.urandom(32))  # another user's key (or a new one): nothing verifies
    with pytest.raises(ResultsError, match="changed since your fersearch wrote it"):
        pickles.verify(exp, "exp")
    key.chmod(0o644)
    with pytest.raises(ResultsError, match="readable or owned by someone else"):
        pickles.secret()
