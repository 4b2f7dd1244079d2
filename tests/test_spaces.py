"""Search-space files: the shipped spaces load and say what they tune; broken files are one-line errors."""

from __future__ import annotations

import pickle
import textwrap

import optuna
import pytest
from typer.testing import CliRunner

from fersearch.cli import app
from fersearch.config import TrainConfig
from fersearch.errors import SpaceError
from fersearch.search.spaces import default_spaces_dir, list_spaces, load_space, resolve_space_path

runner = CliRunner()


def write(tmp_path, text: str, name: str = "space.py"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_shipped_spaces_load_and_name_each_hyperparameter_kind():
    for name in ("seed", "wide"):
        space = load_space(name)
        assert space.name == name and space.summary and space.sha256
        doc = space.source.split('"""')[1]
        for kind in ("scientific", "nuisance", "fixed"):
            assert kind in doc, f"{name}.py docstring does not say which hyperparameters are {kind}"


def test_seed_space_tunes_the_card_knobs_and_starts_from_the_seed():
    space = load_space("seed")
    assert set(space.params) == {"filters_1", "filters_2", "filters_3", "dropout_1", "dropout_2", "dropout_3",
                                 "dense", "dense_dropout"}
    assert TrainConfig.from_dict(space.points[0]) == TrainConfig()  # the first trial is exactly the seed CNN


def test_wide_space_adds_depth_optimiser_schedule_augmentation():
    params = set(load_space("wide").params)
    assert {"blocks", "batch_norm", "optimizer", "lr", "weight_decay", "schedule", "hflip", "shift", "rotation",
            "erasing", "normalize", "label_smoothing", "batch_size", "filters_4"} <= params


def test_space_function_pickles_by_source_and_proposes_valid_configs():
    space = load_space("wide")
    fn = pickle.loads(pickle.dumps(space.fn))  # Ray pickles the searcher with plain pickle
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(5):
        trial = study.ask()
        ret = fn(trial) or {}
        cfg = TrainConfig.from_dict({**trial.params, **ret})
        assert len(cfg.filters) == cfg.blocks



def test_step_grid_floats_come_out_as_written_not_with_float_noise():
    from ray.tune.search.optuna.optuna_search import _OptunaTrialSuggestCaptor

    space = load_space("wide")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=2))
    noisy = 0
    for _ in range(20):
        trial = study.ask()
        captor = _OptunaTrialSuggestCaptor(trial)  # what Ray's OptunaSearch hands the space
        ret = space.fn(captor)
        config = {**captor.captured_values, **(ret or {})}  # how OptunaSearch builds the config
        for name in [k for k in config if k.startswith("dropout_") or k == "dense_dropout"]:
            noisy += repr(trial.params[name]) != repr(round(trial.params[name], 2))
            assert repr(config[name]) == repr(round(config[name], 2)), (name, config[name])
    assert noisy  # Optuna itself does produce e.g. 0.35000000000000003, so the test means something

def test_conditional_parameters_are_not_flagged(tmp_path):
    path = write(tmp_path, """
        def space(trial):
            blocks = trial.suggest_int("blocks", 2, 4)
            for i in range(1, blocks + 1):
                trial.suggest_categorical(f"filters_{i}", (16, 32))
    """)
    assert "filters_4" in load_space(path).params


@pytest.mark.parametrize("source, expected", [
    (None, "not found"),
    ("def space(trial):\n    trial.suggest_int('filters_1', 8,\n", "syntax error"),
    ("x = 1\n", "no `space(trial)`"),
    ("import no_such_module_here\n", "ModuleNotFoundError"),
    ("def space(trial):\n    trial.suggest_int('filterz_1', 8, 64)\n", "unknown config key 'filterz_1'"),
    ("def space(trial):\n    trial.suggest_float('lr', 0.1, 0.01)\n", "low <= high"),
    ("def space(trial):\n    trial.suggest_float('lr', 0.0, 0.1, log=True)\n", "low > 0"),
    # only the top of the range is invalid: the endpoint check finds what random proposals would miss
    ("def space(trial):\n    trial.suggest_float('dropout_1', 0.0, 0.96)\n", "dropout_1"),
    ("def space(trial):\n    trial.suggest_categorical('optimizer', ('adam', 'adamx'))\n", "optimizer"),
    ("def space(trial):\n    return 3\n", "must return a dict"),
    ("points = [{'zz': 1}]\ndef space(trial):\n    trial.suggest_float('lr', 1e-3, 1e-2)\n", "points[0] sets zz"),
])
def test_broken_space_is_a_one_line_error_naming_the_file(tmp_path, source, expected):
    path = tmp_path / "broken.py"
    if source is not None:
        path.write_text(source)
    with pytest.raises(SpaceError) as err:
        load_space(path)
    message = str(err.value)
    assert expected in message and str(path) in message and "\n" not in message


def test_cli_tune_with_a_broken_space_fails_before_ray(in_tmp):
    write(in_tmp, "def space(trial):\n    trial.suggest_int('filterz_1', 8, 64)\n", "bad.py")
    result = runner.invoke(app, ["tune", "--space", "bad.py", "--trials", "2"])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: bad.py:") and "filterz_1" in lines[0]


def test_spaces_command_lists_names_and_summaries(in_tmp):
    result = runner.invoke(app, ["spaces"])
    assert result.exit_code == 0, result.output
    assert "seed  Seed space:" in result.output and "wide  Wide space:" in result.output


def test_spaces_command_prefers_local_folder_and_checks(in_tmp):
    (in_tmp / "search_spaces").mkdir()
    write(in_tmp / "search_spaces",
          '"""Mine: just lr."""\ndef space(trial):\n    trial.suggest_float("lr", 1e-4, 1e-2, log=True)\n', "mine.py")
    write(in_tmp / "search_spaces", '"""Broken."""\ndef space(trial):\n    trial.suggest_int("nope", 1, 2)\n',
          "broken.py")
    assert default_spaces_dir().resolve() == (in_tmp / "search_spaces").resolve()
    assert resolve_space_path("mine").name == "mine.py"
    assert resolve_space_path("seed").name == "seed.py"  # shipped spaces stay reachable by name
    result = runner.invoke(app, ["spaces", "--check", "--json"])
    assert result.exit_code == 0, result.output
    import json

    checks = {s["name"]: s["check"] for s in json.loads(result.output)}
    assert checks["mine"] == "ok" and "unknown config key 'nope'" in checks["broken"]
    assert [s["name"] for s in list_spaces()] == ["broken", "mine"]


def test_a_python_function_is_a_space_too():
    from fersearch.search.spaces import space_from_function

    widths = (64, 128)  # a closure: carried by value when Ray pickles the searcher

    def my_space(trial):
        """Dense width and lr only."""
        trial.suggest_categorical("dense", widths)
        trial.suggest_float("lr", 1e-4, 1e-2, log=True)
        return {"batch_norm": True}

    space = space_from_function(my_space, points=[{"dense": 64, "lr": 1e-3}])
    assert (space.name, space.summary, space.params, space.constants) == (
        "my_space", "Dense width and lr only.", ("dense", "lr"), ("batch_norm",))
    assert "suggest_categorical" in space.source
    fn = pickle.loads(pickle.dumps(space.fn))
    trial = optuna.create_study().ask()
    assert fn(trial) == {"batch_norm": True} and trial.params["dense"] in widths

    def broken(trial):
        trial.suggest_int("filterz_1", 8, 64)

    with pytest.raises(SpaceError, match="space function 'broken'.*unknown config key 'filterz_1'"):
        space_from_function(broken)



@pytest.mark.slow  # builds a wheel (a few seconds)
def test_a_built_wheel_carries_the_shipped_spaces(tmp_path):
    import shutil
    import subprocess
    import sys
    import zipfile
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    src = tmp_path / "src"  # a copy: pip builds in the source tree and would leave build/ in the checkout
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(root / name, src / name)
    for pkg in ("fersearch", "search_spaces"):
        shutil.copytree(root / pkg, src / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "-q", "-w", str(tmp_path / "dist")],
                   check=True, capture_output=True)
    names = zipfile.ZipFile(next((tmp_path / "dist").glob("fersearch-*.whl"))).namelist()
    shipped = sorted(p.name for p in (root / "search_spaces").glob("*.py"))
    assert shipped and all(f"fersearch/search_spaces/{n}" in names for n in shipped)
