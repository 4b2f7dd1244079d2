"""Bad input, table-driven, through the real CLI: every case exits non-zero with one line naming the
culprit and the fix, no traceback, nothing created or changed under results/, and no Ray started
for a mistake that can be seen without Ray."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import assert_one_line_error
from fersearch.cli import app

runner = CliRunner()
PIXELS = " ".join(["128"] * 2304)


def _csv(tmp: Path, rows: list[str], header: str = "emotion,pixels,Usage", name: str = "fer2013.csv") -> Path:
    path = tmp / name
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def _good_rows() -> list[str]:
    return [f"{i % 7},{PIXELS},{usage}" for i, usage in enumerate(["Training"] * 14 + ["PublicTest"] * 7)]


def _space(tmp: Path, source: str) -> Path:
    path = tmp / "space.py"
    path.write_text(source)
    return path


def _experiment(tmp: Path, meta: str | None, trials: str | None = None) -> str:
    exp = tmp / "results" / "exp"
    exp.mkdir(parents=True)
    if meta is not None:
        (exp / "fersearch.json").write_text(meta)
    if trials is not None:
        (exp / "trials.csv").write_text(trials)
    return "exp"


class _Code:
    """A pickle that runs a shell command when loaded."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _png(tmp: Path) -> Path:
    from PIL import Image

    path = tmp / "face.png"
    Image.new("L", (48, 48), 128).save(path)
    return path


def data_case(rows_or_writer):
    def setup(tmp):
        path = rows_or_writer(tmp) if callable(rows_or_writer) else _csv(tmp, rows_or_writer)
        return ["tune", "--data", str(path), "--trials", "1"]
    return setup


def space_case(source):
    return lambda tmp: ["tune", "--space", str(_space(tmp, source)), "--trials", "1"]


def flags(*args):
    return lambda tmp: ["tune", *args]


def _folder_without_classes(tmp):
    d = tmp / "faces"
    (d / "train").mkdir(parents=True)
    (d / "train" / "readme.txt").write_text("no class folders here")
    return d


def _corrupt_png(tmp):
    d = tmp / "faces"
    for split in ("train", "test"):
        (d / split / "happy").mkdir(parents=True)
        _png(tmp).rename(d / split / "happy" / "ok.png")
    (d / "train" / "happy" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    return d


CASES = {
    # ---- data files
    "data: empty file": (data_case(lambda t: (t / "fer2013.csv").write_text("") or t / "fer2013.csv"), "empty"),
    "data: truncated row": (data_case(_good_rows() + ["3,128 128 12"]), "row"),
    "data: 2303 pixels": (data_case(_good_rows() + [f"3,{' '.join(['1'] * 2303)},Training"]), "2303"),
    "data: pixel 256": (data_case(_good_rows() + [f"3,256 {' '.join(['1'] * 2303)},Training"]), "256"),
    "data: non-numeric pixel": (data_case(_good_rows() + [f"3,x {' '.join(['1'] * 2303)},Training"]), "'x'"),
    "data: label 7": (data_case(_good_rows() + [f"7,{PIXELS},Training"]), "7"),
    "data: unknown Usage": (data_case(_good_rows() + [f"3,{PIXELS},Validation"]), "Validation"),
    "data: missing column": (data_case(lambda t: _csv(t, ["3,Training"] * 3, header="emotion,Usage")), "pixels"),
    "data: no Training rows": (data_case([f"{i % 7},{PIXELS},PublicTest" for i in range(14)]), "Training"),
    "data: binary garbage": (data_case(lambda t: (t / "fer2013.csv").write_bytes(os.urandom(4096))
                                       or t / "fer2013.csv"), "fer2013.csv"),
    "data: folder without class folders": (data_case(_folder_without_classes), "faces"),
    "data: corrupt PNG": (data_case(_corrupt_png), "broken.png"),
    # ---- search-space files
    "space: syntax error": (space_case("def space(trial)\n    return {}\n"), "syntax error"),
    "space: no space": (space_case("x = 1\n"), "no `space(trial)`"),
    "space: returns a non-dict": (space_case("def space(trial):\n    return [1, 2]\n"), "must return a dict"),
    "space: unknown key": (space_case("def space(trial):\n    return {'filterz': 3}\n"), "filterz"),
    "space: low > high": (space_case("def space(trial):\n    trial.suggest_float('lr', 0.1, 0.01)\n"),
                          "trial.suggest_float('lr', 0.1, 0.01): `low <= high`"),
    "space: int low > high": (space_case("def space(trial):\n    trial.suggest_int('dense', 512, 64, step=64)\n"),
                              "trial.suggest_int('dense', 512, 64, step=64)"),
    "space: raises": (space_case("def space(trial):\n    raise RuntimeError('boom')\n"), "boom"),
    # ---- flags
    "flag: --trials 0": (flags("--trials", "0"), "--trials 0"),
    "flag: negative GPUs": (flags("--gpus", "-1"), "--gpus"),
    "flag: more GPUs than the cluster has": (flags("--gpus", "64"), "--gpus 64"),
    "flag: fractional GPU above 1": (flags("--gpus-per-trial", "1.5"), "--gpus-per-trial 1.5"),
    "flag: grace period above max epochs": (flags("--grace-period", "9", "--max-epochs", "3"), "--grace-period 9"),
    "flag: name with a slash": (flags("--name", "a/b"), "--name"),
    "flag: name with ..": (flags("--name", ".."), "--name"),
    "flag: hidden name": (flags("--name", ".hidden"), "--name '.hidden'"),
    "flag: name starting with -": (flags("--name=-rf"), "--name '-rf'"),
    "flag: name with a space": (flags("--name", "my search"), "--name 'my search'"),
    "flag: name with a backslash": (flags("--name", "a\\b"), "--name"),
    "flag: name of 101 characters": (flags("--name", "x" * 101), "up to 100"),
    "flag: name not ASCII": (flags("--name", "r\u00e9sultat"), "--name"),
    "results: below a file": (lambda t: ["tune", "--results", str((t / "afile").write_text("x") and t / "afile" / "r")],
                              "afile is a file"),
    "results: a file": (lambda t: ["tune", "--results", str((t / "afile").write_text("x") and t / "afile")],
                        "is a file, not a directory"),
    "flag: unknown scheduler": (flags("--scheduler", "hyperband"), "--scheduler"),
    # ---- experiments
    "experiment: unknown name": (lambda t: ["best", "nope"], "nope"),
    "experiment: no finished trial": (lambda t: ["best", _experiment(
        t, json.dumps({"name": "exp", "trials": 2}), "trial_id,status,epochs,best_val_acc,best_epoch,last_val_acc,"
        "node,gpu_ids,error,config_json\n")], "no trial"),
    "experiment: corrupt fersearch.json": (lambda t: ["best", _experiment(t, "{not json")], "fersearch.json"),
    "experiment: fersearch.json not an object": (lambda t: ["status", _experiment(t, "[1, 2]")], "fersearch.json"),
    # ---- model files
    "model: not a model": (lambda t: ["predict", str(_png(t)), "--model",
                                      str((t / "m.pt").write_text("hello") and t / "m.pt")], "m.pt"),
    "model: a pickle carrying code": (lambda t: ["predict", str(_png(t)), "--model",
                                                 str((t / "evil.pt").write_bytes(pickle.dumps(_Code(t / "pwned")))
                                                     and t / "evil.pt")], "evil.pt"),
}


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*"))} if root.exists() else {}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_bad_input_is_one_line_and_changes_nothing(in_tmp, ray_never_started, case):
    setup, fragment = CASES[case]
    args = setup(in_tmp)
    results = in_tmp / "results"
    keep = results / "keep"
    keep.mkdir(parents=True, exist_ok=True)
    (keep / "fersearch.json").write_text(json.dumps({"name": "keep"}))
    before = _snapshot(results)
    own_results = "--results" in args  # a case about --results itself
    result = runner.invoke(app, [*args, *(["--results", str(results)]
                                          if args[0] in ("tune", "best", "status") and not own_results else [])])
    assert_one_line_error(result, fragment)
    assert _snapshot(results) == before, "results/ changed"
    assert not (in_tmp / "pwned").exists(), "code ran"


# ------------------------------------------------------------------ choice flags and -q
def test_choice_flags_list_their_values_in_help_and_refuse_others_in_one_line():
    from typing import get_args

    from fersearch.commands.common import SYNTH_PRESETS
    from fersearch.data.presets import PRESETS

    assert get_args(SYNTH_PRESETS) == PRESETS  # the commands do not import data/ (a light --help)
    for args, shown in ((["tune"], ("<asha|fifo>", "<mix|tpe|random>")), (["best"], ("<test|val>",)),
                        (["data", "synth"], ("<default|hard>",)), (["data", "preview"], ("<train|val|test>",))):
        out = runner.invoke(app, [*args, "--help"], terminal_width=200).output
        assert all(s in out for s in shown), (args, out)
    assert_one_line_error(runner.invoke(app, ["tune", "--sampler", "grid"]), "--sampler", "'tpe', 'random'")
    assert_one_line_error(runner.invoke(app, ["data", "synth", "--preset", "easy"]), "--preset", "'hard'")


@pytest.mark.slow
def test_quiet_commands_print_only_their_result(tiny_csv, tmp_path):
    """-q on every command that prints progress: the loader's lines on a first (uncached) load
    and train's epoch lines are gone; the result is still printed."""
    import shutil

    data = tmp_path / "fer2013.csv"
    shutil.copy(tiny_csv, data)  # a first load of this path: the loader would report it
    loud = runner.invoke(app, ["data", "info", str(data)])
    assert loud.exit_code == 0 and loud.stderr.strip(), "the first load says nothing: this test checks nothing"
    for name in ("quiet.csv", "loud.csv", "preview.csv"):  # more first loads: quiet ones and a loud one
        data.with_name(name).write_bytes(data.read_bytes())
    quiet = runner.invoke(app, ["data", "info", "-q", str(data.with_name("quiet.csv"))])
    assert quiet.exit_code == 0 and quiet.stderr == "" and "images" in quiet.stdout
    assert runner.invoke(app, ["data", "info", str(data.with_name("loud.csv"))]).stderr.strip()
    grid = runner.invoke(app, ["data", "preview", "-q", str(data.with_name("preview.csv")), "--out",
                               str(tmp_path / "grid.png")])
    assert grid.exit_code == 0 and grid.stderr == "" and (tmp_path / "grid.png").is_file(), grid.output
    run = runner.invoke(app, ["train", "-q", "--data", str(data), "--epochs", "1", "--set", "blocks=1",
                              "--set", "filters=8", "--set", "dense=16", "--out", str(tmp_path / "run")])
    assert run.exit_code == 0 and run.stderr == "", run.output
    assert "val_acc" in run.stdout or "accuracy" in run.stdout.lower(), run.stdout
