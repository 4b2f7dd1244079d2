"""Training: batched augmentation, every training field, learning, early stopping, exact resume, precision."""

from __future__ import annotations

import dataclasses
import functools
import io
import json
import re

import numpy as np
import pytest
import torch
from rich.console import Console
from typer.testing import CliRunner

from fersearch.cli import app
from fersearch.config import TrainConfig
from fersearch.data import FerData
from fersearch.errors import ConfigError, DataError
from fersearch.report.run import resolve_config
from fersearch.train import fit, predict_proba, score
from fersearch.train.augment import augment_batch
from fersearch.train.device import autocast, native_bf16, resolve_precision
from fersearch.train.recipe import class_weights, make_optimizer, make_scheduler

# A small CNN that learns the structured set below in a few epochs, in a fraction of a second.
SMALL = TrainConfig(blocks=2, filters=(8, 16), dropout=(0.25, 0.25), dense=32, lr=3e-3, epochs=1, patience=0,
                    precision="fp32")
TIMING = ("images_per_s", "epoch_time_s")


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: the machine is shared, and bit-exact comparisons need a fixed count."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def structured_data(n: int = 420, seed: int = 0) -> FerData:
    """Noisy images whose class is a bright bar's row: learnable in a few epochs, unlike real faces."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 7, n).astype(np.int64)
    labels[:14] = np.arange(14) % 7  # every class in both splits
    images = rng.normal(110, 30, (n, 48, 48))
    for i, y in enumerate(labels):
        row = 4 + 6 * y + rng.integers(-1, 2)
        images[i, row:row + 4, 8:40] += 90
    split = np.where(np.arange(n) % 5 == 0, 1, 0).astype(np.int8)  # 80 % train, 20 % val
    return FerData(np.clip(images, 0, 255).astype(np.uint8), labels, split, source="structured")


DATA = structured_data()


def weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def without_timing(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in h.items() if k not in TIMING} for h in history]


@functools.cache
def _fit_small(changes: tuple) -> tuple[dict, list[dict]]:
    result = fit(SMALL.replace(**dict(changes)), DATA)
    return weights(result.model), result.history


def fit_small(**changes):
    return _fit_small(tuple(sorted(changes.items())))


# ------------------------------------------------------------------ augmentation
def batch(n: int = 32) -> torch.Tensor:
    return torch.from_numpy(DATA.images[:n]).float().unsqueeze(1)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_no_augmentation_leaves_the_batch_alone():
    x = batch()
    assert torch.equal(augment_batch(x, SMALL, gen()), x)


def test_hflip_mirrors_about_half_of_the_images():
    x = batch()
    y = augment_batch(x, SMALL.replace(hflip=True), gen())
    flipped = [torch.equal(y[i], x[i].flip(2)) for i in range(len(x))]
    kept = [torch.equal(y[i], x[i]) for i in range(len(x))]
    assert all(f or k for f, k in zip(flipped, kept))
    assert 6 <= sum(flipped) <= 26


def test_shift_moves_each_image_by_whole_pixels():
    x = batch(8)
    y = augment_batch(x, SMALL.replace(shift=3), gen())
    assert not torch.equal(x, y)
    inner = slice(3, 45)
    for i in range(len(x)):
        # Exactly one whole-pixel shift within +-3 explains the interior of the output.
        matches = [(dy, dx) for dy in range(-3, 4) for dx in range(-3, 4)
                   if torch.allclose(y[i, 0, inner, inner], x[i, 0, 3 + dy:45 + dy, 3 + dx:45 + dx], atol=1e-2)]
        assert len(matches) >= 1, i


def test_rotation_differs_per_image_and_keeps_the_center():
    x = batch(8)
    y = augment_batch(x, SMALL.replace(rotation=20.0), gen())
    assert all(not torch.allclose(y[i], x[i], atol=1.0) for i in range(len(x)))
    assert torch.allclose(y[:, :, 23:25, 23:25], x[:, :, 23:25, 23:25], atol=40)


def test_erasing_replaces_one_rectangle_with_the_given_probability():
    x = batch(64)
    y = augment_batch(x, SMALL.replace(erasing=1.0), gen())
    for i in range(len(x)):
        rows, cols = torch.nonzero(y[i, 0] != x[i, 0], as_tuple=True)
        assert len(rows) > 0
        box = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
        assert box <= 0.4 * 48 * 48  # one rectangle of at most a third of the face (plus rounding)
    half = augment_batch(x, SMALL.replace(erasing=0.5), gen())
    erased = sum(not torch.equal(half[i], x[i]) for i in range(len(x)))
    assert 16 <= erased <= 48


def test_augmentation_is_reproducible_per_generator_seed():
    cfg = SMALL.replace(hflip=True, shift=2, rotation=10.0, erasing=0.5)
    x = batch()
    assert torch.equal(augment_batch(x, cfg, gen(1)), augment_batch(x, cfg, gen(1)))
    assert not torch.equal(augment_batch(x, cfg, gen(1)), augment_batch(x, cfg, gen(2)))


# ------------------------------------------------------------------ every training field matters
TRAINING_CHANGES = {
    # field: (baseline changes, changed) -- both trained 1 epoch from the same seed in fp32
    "optimizer": ({"weight_decay": 0.05}, {"weight_decay": 0.05, "optimizer": "adamw"}),
    "lr": ({}, {"lr": 1e-3}),
    "weight_decay": ({}, {"weight_decay": 0.01}),
    "momentum": ({"optimizer": "sgd"}, {"optimizer": "sgd", "momentum": 0.5}),
    "batch_size": ({}, {"batch_size": 32}),
    "label_smoothing": ({}, {"label_smoothing": 0.1}),
    "class_weighting": ({}, {"class_weighting": "balanced"}),
    "hflip": ({}, {"hflip": True}),
    "shift": ({}, {"shift": 2}),
    "rotation": ({}, {"rotation": 10.0}),
    "erasing": ({}, {"erasing": 0.5}),
    "normalize": ({}, {"normalize": "standardize"}),
    "seed": ({}, {"seed": 1}),
    "precision": ({}, {"precision": "bf16"}),
    "epochs": ({}, {"epochs": 2}),
}
# Fields whose effect is checked by a dedicated test (here or in test_model.py).
CHECKED_ELSEWHERE = {"blocks", "filters", "kernel_size", "padding", "convs_per_block", "dropout", "batch_norm",
                     "dense", "dense_dropout", "schedule", "patience",
                     "deterministic",  # same weights on the CPU by design: test_deterministic_is_a_config_key...
                     "cuda_graphs"}  # how a CUDA step runs, not what it computes: test_graphs.py


def test_every_config_field_is_checked():
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    assert fields == set(TRAINING_CHANGES) | CHECKED_ELSEWHERE


@pytest.mark.parametrize("field", sorted(TRAINING_CHANGES))
def test_every_training_field_changes_the_training(field):
    base, changed = TRAINING_CHANGES[field]
    w0, h0 = fit_small(**base)
    w1, h1 = fit_small(**changed)
    assert not same_weights(w0, w1), f"{field} was ignored"
    if field in ("label_smoothing", "class_weighting"):
        assert h0[0]["train_loss"] != h1[0]["train_loss"]


def test_fp32_on_the_cpu_is_deterministic():
    a = fit(SMALL.replace(hflip=True, erasing=0.3), DATA)
    b = fit(SMALL.replace(hflip=True, erasing=0.3), DATA)
    assert same_weights(weights(a.model), weights(b.model))
    assert without_timing(a.history) == without_timing(b.history)


def test_sgd_uses_nesterov_momentum_and_balanced_weights_follow_counts():
    model = torch.nn.Linear(2, 2)
    opt = make_optimizer(SMALL.replace(optimizer="sgd", momentum=0.8), model.parameters())
    assert opt.param_groups[0]["nesterov"] and opt.param_groups[0]["momentum"] == 0.8
    w = class_weights(torch.tensor([0, 0, 0, 1]), "balanced")
    assert torch.allclose(w[:2], torch.tensor([4 / 6, 4 / 2])) and (w[2:] == 0).all()
    assert class_weights(torch.tensor([0, 1]), "none") is None


def test_schedules_change_the_lr_over_epochs():
    cosine = fit(SMALL.replace(epochs=3, schedule="cosine"), DATA).history
    assert [h["lr"] for h in cosine] == pytest.approx([3e-3, 2.25e-3, 0.75e-3])
    none = fit(SMALL.replace(epochs=2), DATA).history
    assert [h["lr"] for h in none] == [3e-3, 3e-3]
    # Plateau halves the lr after 2 epochs without a val_acc gain.
    opt = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=1.0)
    plateau = make_scheduler(SMALL.replace(schedule="plateau"), opt)
    lrs = []
    for val_acc in (0.5, 0.5, 0.5, 0.5, 0.6):
        plateau.step(val_acc)
        lrs.append(opt.param_groups[0]["lr"])
    assert lrs == [1.0, 1.0, 1.0, 0.5, 0.5]


# ------------------------------------------------------------------ precision
def test_precision_auto_picks_native_bf16_and_fp32_is_exact():
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) == ("bf16" if native_bf16(cpu) else "fp32")
    assert resolve_precision("fp32", cpu) == "fp32" and resolve_precision("bf16", cpu) == "bf16"
    conv = torch.nn.Conv2d(1, 2, 3)
    x = torch.rand(1, 1, 8, 8)
    with autocast(cpu, "bf16"):
        assert conv(x).dtype == torch.bfloat16
    with autocast(cpu, "fp32"):
        assert conv(x).dtype == torch.float32
    assert fit(SMALL.replace(precision="bf16"), DATA).precision == "bf16"


# ------------------------------------------------------------------ learning, stopping, resuming
def test_a_short_run_learns_and_score_agrees_with_fit():
    result = fit(SMALL.replace(epochs=4), DATA, progress=True)
    val_x, val_y = DATA.subset("val")
    majority = np.bincount(val_y).max() / len(val_y)
    assert result.best_val_acc >= majority + 0.4, result.history
    assert result.history[result.best_epoch - 1]["val_acc"] == result.best_val_acc
    assert set(result.history[0]) == {"epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr",
                                      "images_per_s", "epoch_time_s", "best_val_acc"}
    ev = score(result.model, val_x, val_y)
    assert ev["acc"] == pytest.approx(result.best_val_acc)
    assert ev["loss"] == pytest.approx(result.history[result.best_epoch - 1]["val_loss"], rel=1e-5)
    probs = predict_proba(result.model, val_x)
    assert probs.shape == (len(val_x), 7) and np.allclose(probs.sum(1), 1, atol=1e-5)
    assert np.allclose(ev["probs"], probs)
    tta = predict_proba(result.model, val_x, tta=True)
    assert np.allclose(tta.sum(1), 1, atol=1e-5) and not np.allclose(tta, probs)


def test_progress_prints_one_line_per_epoch(capsys):
    fit(SMALL.replace(epochs=2), DATA, progress=True)
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert out == "" and "\x1b" not in err and "\r" not in err  # not a terminal: plain lines only
    assert lines[0] == "training on cpu (fp32, 1 thread): 336 train / 84 val images, up to 2 epochs"
    assert len(lines) == 3 and [ln.split()[:2] for ln in lines[1:]] == [["epoch", "1/2"], ["epoch", "2/2"]]
    assert all(re.search(r"  val_loss \d\.\d{3}  val_acc \d\.\d{3}  lr .* img/s  \d+\.\ds$", ln) for ln in lines[1:])


def test_progress_on_a_terminal_draws_a_bar_per_epoch_and_keeps_its_line(capsys):
    screen = io.StringIO()
    fit(SMALL.replace(epochs=2), DATA, progress=Console(file=screen, force_terminal=True, width=120))
    text = screen.getvalue()
    assert capsys.readouterr() == ("", "")  # everything went to the console given
    plain = re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", text)
    for epoch in (1, 2):
        # A bar over the training images with the running loss, accuracy and speed...
        assert re.search(rf"epoch {epoch}/2 ━+╸?━* +\d+/336 loss \d\.\d{{3}}  acc \d\.\d{{3}}  [\d,]+ img/s", plain)
        # ...then, in its place, one kept line with the epoch's metrics.
        assert len(re.findall(rf"epoch {epoch}/2  loss .* val_acc \d\.\d{{3}} .*\n", plain)) == 1
    assert plain.startswith("training on cpu (fp32, 1 thread)")


def test_no_progress_prints_nothing(capsys):
    fit(SMALL, DATA, progress=False)
    assert capsys.readouterr() == ("", "")


def test_early_stopping_stops_and_restores_the_best_epoch():
    snapshots = {}

    def on_epoch(metrics, state):
        snapshots[metrics["epoch"]] = state()["model"]

    # A tiny lr keeps val_acc flat, so nothing improves after epoch 1.
    result = fit(SMALL.replace(lr=1e-7, epochs=8, patience=2), DATA, on_epoch=on_epoch)
    assert result.stopped_early and result.best_epoch == 1 and result.epochs == 3
    assert sorted(snapshots) == [1, 2, 3]
    assert same_weights(weights(result.model), snapshots[1])
    assert not same_weights(snapshots[1], snapshots[3])


def test_resume_after_epoch_k_equals_an_uninterrupted_run(tmp_path):
    cfg = SMALL.replace(epochs=4, hflip=True, shift=2, erasing=0.3, schedule="cosine")
    states = {}

    def keep(metrics, state):
        states[metrics["epoch"]] = state()

    full = fit(cfg, DATA, on_epoch=keep)
    torch.save(states[2], tmp_path / "state.pt")
    saved = torch.load(tmp_path / "state.pt", weights_only=True)  # plain tensors and data only
    resumed_states = {}
    resumed = fit(cfg, DATA, resume=saved, on_epoch=lambda m, s: resumed_states.__setitem__(m["epoch"], s()))
    assert sorted(resumed_states) == [3, 4]
    assert same_weights(resumed_states[4]["model"], states[4]["model"])
    assert same_weights(weights(resumed.model), weights(full.model))
    assert without_timing(resumed.history) == without_timing(full.history)
    assert (resumed.best_epoch, resumed.best_val_acc) == (full.best_epoch, full.best_val_acc)


def test_resume_refuses_another_config():
    states = []
    fit(SMALL, DATA, on_epoch=lambda m, s: states.append(s()))
    with pytest.raises(ConfigError, match="'lr'"):
        fit(SMALL.replace(lr=1e-3, epochs=2), DATA, resume=states[0])
    # More epochs continue the same run.
    assert fit(SMALL.replace(epochs=2), DATA, resume=states[0]).epochs == 2


def test_missing_validation_split_is_a_data_error():
    no_val = dataclasses.replace(DATA, split=np.zeros_like(DATA.split))
    with pytest.raises(DataError, match="no labelled val images"):
        fit(SMALL, no_val)


def test_threads_follow_the_request():
    torch.set_num_threads(2)
    fit(SMALL, DATA, threads=1)
    assert torch.get_num_threads() == 1


# ------------------------------------------------------------------ fersearch train
def test_resolve_config_layers_file_set_and_flags(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"lr": 0.01, "dense": 64, "epochs": 5}))
    cfg = resolve_config(path, {"dense": "128", "filters_2": "16"}, epochs=2, seed=7)
    assert (cfg.lr, cfg.dense, cfg.filters, cfg.epochs, cfg.seed) == (0.01, 128, (32, 16, 128), 2, 7)
    assert resolve_config() == TrainConfig()


@pytest.mark.parametrize("args, words", [
    (["--set", "bogus=1"], ["unknown config key 'bogus'"]),
    (["--set", "lr=fast"], ["'lr'", "must be a (finite) number"]),
    (["--set", "hflip=maybe"], ["'hflip'", "true or false"]),
    (["--set", "blocks=6"], ["impossible shape", "'blocks'"]),
    (["--set", "filters_4=8"], ["'filters_4'", "outside blocks"]),
    (["--set", "lr"], ["--set 'lr'", "key=value"]),
    (["--epochs", "0"], ["'epochs'", "out of range"]),
    (["--config", "missing.json"], ["missing.json", "not found"]),
])
def test_cli_train_config_mistakes_are_one_line_before_any_data(in_tmp, args, words):
    res = CliRunner().invoke(app, ["train", *args])
    assert res.exit_code == 1 and res.stdout == ""
    assert res.stderr.startswith("error: ") and res.stderr.count("\n") == 1, res.stderr
    for w in words:
        assert w in res.stderr
    assert not (in_tmp / "data").exists() and not (in_tmp / "results").exists()  # nothing read or written


def test_cli_train_json_end_to_end(in_tmp, tiny_csv):
    from fersearch.io import file_sha256
    from fersearch.model import load_model

    small = ["--set", "blocks=2", "--set", "filters=8,16", "--set", "dense=32", "--set", "precision=fp32"]
    res = CliRunner().invoke(app, ["train", "--data", str(tiny_csv), *small, "--epochs", "2", "--seed", "3",
                                   "--out", "run", "--threads", "1", "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)  # stdout holds the JSON and nothing else
    assert summary["epochs"] == 2 and summary["out"] == "run" and summary["images_per_s"] > 0
    assert 0 <= summary["val_acc"] <= 1 and summary["best_epoch"] in (1, 2) and summary["device"] == "cpu"
    run = in_tmp / "run"
    cfg = json.loads((run / "config.json").read_text())
    assert cfg == TrainConfig.from_dict({"blocks": 2, "filters": [8, 16], "dense": 32, "precision": "fp32",
                                         "epochs": 2, "seed": 3}).to_dict()
    rows = (run / "history.csv").read_text().splitlines()
    assert rows[0].startswith("epoch,train_loss,train_acc,val_loss,val_acc,lr") and len(rows) == 3
    payload = torch.load(run / "model.pt", weights_only=True)
    assert payload["config"] == cfg and payload["meta"]["val_acc"] == summary["val_acc"]
    model, loaded_cfg, _ = load_model(run / "model.pt")
    assert loaded_cfg.to_dict() == cfg
    meta = json.loads((run / "fersearch.json").read_text())
    assert meta["command"] and meta["created"]  # (under CliRunner the command is pytest's argv)
    assert meta["data"]["path"] == str(tiny_csv) and meta["data"]["sha256"] == file_sha256(tiny_csv)
    assert meta["versions"]["torch"].startswith(torch.__version__.split("+")[0])
    assert meta["result"] == summary
    # The same --out again is refused instead of overwriting a finished run.
    again = CliRunner().invoke(app, ["train", "--data", str(tiny_csv), *small, "--epochs", "1", "--out", "run"])
    assert again.exit_code == 1 and "already holds" in again.stderr and again.stderr.count("\n") == 1


def test_cli_train_human_summary_and_default_out(in_tmp, tiny_csv):
    small = ["--set", "blocks=1", "--set", "filters=8", "--set", "dense=16"]
    res = CliRunner().invoke(app, ["train", "--data", str(tiny_csv), *small, "--epochs", "1", "--threads", "1"])
    assert res.exit_code == 0, res.output
    assert "best val_acc" in res.stdout and "epoch 1/1" in res.stderr
    (run,) = (in_tmp / "results").glob("train-*")
    assert {p.name for p in run.iterdir()} >= {"config.json", "history.csv", "model.pt", "fersearch.json"}


def test_no_cuda_falls_back_to_the_cpu():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert fit(SMALL, DATA, device="cuda").device == "cpu"


@pytest.mark.gpu
def test_trains_on_a_gpu_with_resume():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    states = []
    cfg = SMALL.replace(epochs=2, hflip=True, shift=2, erasing=0.3, precision="auto")
    full = fit(cfg, DATA, device="cuda", on_epoch=lambda m, s: states.append(s()))
    assert full.device.startswith("cuda") and full.best_val_acc > 0
    resumed = fit(cfg, DATA, device="cuda", resume=states[0])
    assert resumed.epochs == 2 and next(resumed.model.parameters()).is_cuda


# ------------------------------------------------------------------ the GPU path, as a CPU shows it
@pytest.mark.parametrize("capability, native", [((6, 1), False), ((7, 0), False), ((7, 5), False), ((8, 0), True),
                                                ((8, 6), True), ((9, 0), True)])
def test_bf16_only_from_ampere_on_not_emulated(capability, native):
    from fersearch.train.device import bf16_capability

    # V100 (7.0) and T4 (7.5) answer is_bf16_supported() == True by emulation; 'auto' must stay fp32 there.
    assert bf16_capability(capability) is native


def test_a_state_holds_its_own_device_rng_only_and_best_weights_once():
    states = {}
    fit(SMALL.replace(epochs=2, hflip=True), DATA, on_epoch=lambda m, s: states.__setitem__(m["epoch"], s()))
    best_epoch = max(states, key=lambda e: states[e]["history"][-1]["val_acc"])
    state = states[best_epoch]
    assert state["rng"]["aug_device"] == "cpu" and state["rng"]["cuda"] == []
    # the epoch that is the best so far: its best weights are the model's own, not stored a second time
    assert state["early"]["best_epoch"] == best_epoch and state["early"]["best_is_current"]
    assert state["early"]["best_weights"] == {}


def test_resume_from_a_best_epoch_state_equals_an_uninterrupted_run():
    cfg = SMALL.replace(epochs=3, patience=0)
    states = {}
    full = fit(cfg, DATA, on_epoch=lambda m, s: states.__setitem__(m["epoch"], s()))
    assert states[1]["early"]["best_is_current"]  # epoch 1 is always the best so far
    resumed = fit(cfg, DATA, resume=states[1])
    assert same_weights(weights(resumed.model), weights(full.model))
    assert (resumed.best_epoch, resumed.best_val_acc) == (full.best_epoch, full.best_val_acc)


def _gpu_state_of(state: dict, legacy: bool) -> dict:
    """A CPU state turned into what a CUDA trial saves: a 16-byte Philox augmentation state and
    its GPU's RNG (legacy: no aug_device, every visible GPU's state, as older checkpoints hold)."""
    philox = torch.zeros(16, dtype=torch.uint8)
    rng = {**state["rng"], "aug": philox, "aug_device": "cuda", "cuda": [philox.clone()]}
    if legacy:
        del rng["aug_device"]
        rng["cuda"] = [philox.clone(), philox.clone()]
    return {**state, "rng": rng}


@pytest.mark.parametrize("legacy", [False, True])
def test_a_gpu_state_resumes_on_the_cpu_with_a_note(legacy, caplog):
    cfg = SMALL.replace(epochs=2, hflip=True, shift=2)
    states = []
    fit(cfg, DATA, on_epoch=lambda m, s: states.append(s()))
    buf = io.BytesIO()
    torch.save(_gpu_state_of(states[0], legacy), buf)
    buf.seek(0)
    gpu_state = torch.load(buf, weights_only=True)
    with caplog.at_level("WARNING", logger="fersearch.train.loop"):
        resumed = fit(cfg, DATA, resume=gpu_state, device="cpu")
    assert resumed.epochs == 2 and resumed.device == "cpu"
    assert "resumed on cpu from a cuda state" in caplog.text and "not bit-identical" in caplog.text


def test_deterministic_is_a_config_key_and_restores_the_defaults():
    cfg = TrainConfig.from_dict({"deterministic": "true"}, base=SMALL)
    assert cfg.deterministic is True
    a, b = fit(cfg, DATA), fit(cfg, DATA)
    assert same_weights(weights(a.model), weights(b.model))
    assert torch.are_deterministic_algorithms_enabled() and torch.backends.cudnn.deterministic
    fit(SMALL, DATA)  # the next ordinary run turns it off again
    assert not torch.are_deterministic_algorithms_enabled() and not torch.backends.cudnn.deterministic
    # a state saved before the key existed resumes (it held the default)
    states = []
    fit(SMALL.replace(epochs=2), DATA, on_epoch=lambda m, s: states.append(s()))
    old = {**states[0], "config": {k: v for k, v in states[0]["config"].items() if k != "deterministic"}}
    assert fit(SMALL.replace(epochs=2), DATA, resume=old).epochs == 2


@pytest.mark.gpu
def test_the_epoch_clock_times_the_gpu_work_not_the_launches():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    import time

    from fersearch.train.device import DeviceClock

    dev = torch.device("cuda")
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    clock = DeviceClock(dev)
    torch.cuda._sleep(int(2e8))  # queued: returns at once, runs for ~0.1 s on the GPU
    clock.stop()
    launched = time.perf_counter() - t0
    torch.cuda.synchronize()  # the epoch's one sync (summary) comes before the clock is read
    assert clock.seconds() > launched * 5 and clock.seconds() > 0.02


@pytest.mark.gpu
def test_a_gpu_run_is_bit_identical_with_deterministic_and_resumes_on_the_cpu():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    cfg = SMALL.replace(epochs=2, hflip=True, shift=2, erasing=0.3, deterministic=True)
    states = []
    a = fit(cfg, DATA, device="cuda", on_epoch=lambda m, s: states.append(s()))
    b = fit(cfg, DATA, device="cuda")
    assert same_weights(weights(a.model), weights(b.model))
    assert states[0]["rng"]["aug_device"] == "cuda" and len(states[0]["rng"]["cuda"]) == 1
    assert fit(cfg, DATA, device="cpu", resume=states[0]).epochs == 2  # GPU checkpoint, CPU node
    cpu_states = []
    fit(cfg, DATA, device="cpu", on_epoch=lambda m, s: cpu_states.append(s()))
    assert fit(cfg, DATA, device="cuda", resume=cpu_states[0]).epochs == 2  # and back
