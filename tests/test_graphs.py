"""The graphed training step and evaluation (train/graphs.py).

The CPU tests check what a CPU can: the config key, the portable optimiser state, the
precision rule. The gpu-marked tests need a CUDA GPU (skipped elsewhere): a graphed fit
against an eager one, resume, every optimiser and schedule, the eager fallback, evaluation."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from fersearch.config import TrainConfig
from fersearch.data import FerData
from fersearch.errors import ConfigError
from fersearch.train import fit
from fersearch.train.device import resolve_precision
from fersearch.train.graphs import MODES, portable_optimizer_state, use_graphs

# Graphed and eager steps run the same kernels in the same order (deterministic=True), but a
# capturable Adam and the fused SGD round their updates differently from the eager optimisers,
# and the differences grow over epochs: per-epoch losses agree within this relative tolerance.
LOSS_RTOL = 2e-3


def data(n_train: int = 1_600, n_val: int = 600, seed: int = 0) -> FerData:
    """Faces whose mean brightness tells the class: enough signal for losses that move."""
    rng = np.random.default_rng(seed)
    n = n_train + n_val
    labels = rng.integers(0, 7, n)
    images = np.clip(rng.normal(60 + 20 * labels[:, None, None], 40, (n, 48, 48)), 0, 255).astype(np.uint8)
    split = np.r_[np.zeros(n_train, np.int8), np.ones(n_val, np.int8)]
    return FerData(images, labels.astype(np.int64), split, source="test_graphs")


DATA = data()
QUIET = dict(dropout=(0.0, 0.0, 0.0), dense_dropout=0.0, precision="fp32", deterministic=True, patience=0)


# ------------------------------------------------------------------ on any machine
def test_cuda_graphs_is_a_checked_config_key():
    assert TrainConfig().cuda_graphs == "auto" and MODES == ("auto", "on", "off")
    with pytest.raises(ConfigError, match="cuda_graphs"):
        TrainConfig.from_dict({"cuda_graphs": "sometimes"})


def test_the_cpu_never_graphs_and_on_says_so_in_one_line():
    cpu = torch.device("cpu")
    assert not use_graphs("auto", cpu) and not use_graphs("off", cpu)
    with pytest.raises(ConfigError) as e:
        use_graphs("on", cpu)
    assert "\n" not in str(e.value) and "cuda_graphs=on needs a CUDA device" in str(e.value)


def test_on_the_cpu_auto_and_off_train_the_same_weights():
    cfg = TrainConfig(epochs=1, batch_size=64)
    small = data(300, 100)
    a, b = (fit(cfg.replace(cuda_graphs=m), small, device="cpu") for m in ("auto", "off"))
    assert not a.cuda_graphs and not b.cuda_graphs
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_the_precision_rule():
    # eager CUDA steps are launch-bound: bf16 only adds cast kernels (measured slower on an H200)
    assert resolve_precision("auto", torch.device("cuda"), graphs=False) == "fp32"
    assert resolve_precision("bf16", torch.device("cuda"), graphs=False) == "bf16"
    assert resolve_precision("fp32", torch.device("cuda"), graphs=True) == "fp32"


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("weighted", [False, True])
def test_the_capture_safe_loss_equals_torch_cross_entropy(smoothing, weighted):
    from fersearch.train.recipe import training_loss

    g = torch.Generator().manual_seed(0)
    logits, y = torch.randn(64, 7, generator=g), torch.randint(0, 7, (64,), generator=g)
    w = torch.rand(7, generator=g) + 0.5 if weighted else None
    torch.testing.assert_close(training_loss(logits, y, w, smoothing),
                               torch.nn.functional.cross_entropy(logits, y, weight=w, label_smoothing=smoothing))


def test_a_saved_optimiser_state_carries_no_capture_flags():
    p = torch.nn.Parameter(torch.ones(2))
    for opt in (torch.optim.Adam([p], capturable=False), torch.optim.SGD([p], lr=0.1, momentum=0.9)):
        state = opt.state_dict()
        state["param_groups"][0].update(capturable=True, fused=True, lr=torch.tensor(0.5))
        plain = portable_optimizer_state(state)["param_groups"][0]
        assert plain["capturable"] is False and plain["fused"] is None and plain["lr"] == 0.5
        assert state["param_groups"][0]["capturable"] is True  # the original is left alone


# ------------------------------------------------------------------ on a CUDA GPU
gpu = pytest.mark.gpu
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")


def losses(result) -> np.ndarray:
    return np.array([[h["train_loss"], h["val_loss"]] for h in result.history])


@gpu
@needs_cuda
def test_a_graphed_fit_matches_an_eager_one():
    cfg = TrainConfig(epochs=3, **QUIET)
    graphed = fit(cfg, DATA, device="cuda")
    eager = fit(cfg.replace(cuda_graphs="off"), DATA, device="cuda")
    assert graphed.cuda_graphs and not eager.cuda_graphs and graphed.capture_s > 0
    np.testing.assert_allclose(losses(graphed), losses(eager), rtol=LOSS_RTOL)
    assert losses(graphed)[-1, 0] < losses(graphed)[0, 0]  # it learns


@gpu
@needs_cuda
@pytest.mark.parametrize("optimizer", ["adam", "adamw", "sgd"])
@pytest.mark.parametrize("schedule", ["none", "cosine", "plateau"])
def test_every_optimiser_and_schedule_captures_and_follows_the_learning_rate(optimizer, schedule):
    extra = {"momentum": 0.9, "lr": 0.01} if optimizer == "sgd" else {}
    if schedule == "plateau":  # a learning rate too small to move val_acc: the plateau halves it after 3 epochs
        extra["lr"] = 1e-6
    cfg = TrainConfig(epochs=5, optimizer=optimizer, schedule=schedule, weight_decay=0.01, **QUIET, **extra)
    graphed = fit(cfg, DATA, device="cuda")
    eager = fit(cfg.replace(cuda_graphs="off"), DATA, device="cuda")
    assert graphed.cuda_graphs
    lrs = [h["lr"] for h in graphed.history]
    assert lrs == [h["lr"] for h in eager.history]
    if schedule != "none":
        assert lrs[-1] < lrs[0]  # the schedule changed the rate the graph reads
    np.testing.assert_allclose(losses(graphed), losses(eager), rtol=LOSS_RTOL)


@gpu
@needs_cuda
def test_batch_norm_class_weights_label_smoothing_and_augmentation_run_in_the_graph():
    cfg = TrainConfig(epochs=2, batch_norm=True, class_weighting="balanced", label_smoothing=0.1, hflip=True,
                      shift=2, rotation=10.0, erasing=0.3, patience=0)
    result = fit(cfg, DATA, device="cuda")
    assert result.cuda_graphs and all(np.isfinite(losses(result)).all(axis=1))
    again = fit(cfg, DATA, device="cuda")
    # fresh augmentation and dropout per replay, from the seed: a second run is the same run
    np.testing.assert_allclose(losses(again), losses(result), rtol=LOSS_RTOL)


@gpu
@needs_cuda
@pytest.mark.parametrize("saved_by", ["graphed", "eager"])
def test_a_graphed_run_resumes_from_a_checkpoint(saved_by):
    cfg = TrainConfig(epochs=4, **QUIET)
    states = {}
    first = cfg if saved_by == "graphed" else cfg.replace(cuda_graphs="off")
    full = fit(first, DATA, device="cuda", on_epoch=lambda m, s: states.__setitem__(m["epoch"], s()))
    state = states[2]
    assert state["optimizer"]["param_groups"][0].get("capturable") in (False, None)  # portable
    resumed = fit(cfg, DATA, device="cuda", resume=state)  # replaces the optimiser state, then captures
    assert resumed.cuda_graphs and [h["epoch"] for h in resumed.history] == [1, 2, 3, 4]
    np.testing.assert_allclose(losses(resumed), losses(full), rtol=LOSS_RTOL)
    on_cpu = fit(cfg, DATA, device="cpu", resume=states[3])  # a GPU state goes on on the CPU
    assert on_cpu.epochs == 4


@gpu
@needs_cuda
def test_a_capture_that_fails_falls_back_to_eager_with_one_logged_line(monkeypatch, caplog):
    class Refuse:
        def __init__(self, *a, **k):
            pass

        def __enter__(self):
            raise RuntimeError("forced for the test")

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(torch.cuda, "graph", Refuse)
    cfg = TrainConfig(epochs=2, **QUIET)
    with caplog.at_level(logging.WARNING, logger="fersearch.train.graphs"):
        result = fit(cfg, DATA, device="cuda")
    lines = [r.getMessage() for r in caplog.records if "capture failed" in r.getMessage()]
    assert lines and lines[0] == "CUDA graph capture failed (forced for the test); training continues with eager steps"
    assert not result.cuda_graphs and result.epochs == 2
    np.testing.assert_allclose(losses(result), losses(fit(cfg.replace(cuda_graphs="off"), DATA, device="cuda")),
                               rtol=LOSS_RTOL)
    with pytest.raises(ConfigError, match="capture failed"):
        fit(cfg.replace(cuda_graphs="on"), DATA, device="cuda")


@gpu
@needs_cuda
def test_precision_auto_picks_bf16_with_graphs_on_a_native_bf16_gpu():
    from fersearch.train.device import native_bf16

    dev = torch.device("cuda")
    expected = "bf16" if native_bf16(dev) else "fp32"
    assert resolve_precision("auto", dev, graphs=True) == expected
    assert fit(TrainConfig(epochs=1), DATA, device="cuda").precision == expected
    assert fit(TrainConfig(epochs=1, cuda_graphs="off"), DATA, device="cuda").precision == "fp32"


@gpu
@needs_cuda
@pytest.mark.parametrize("tta", [False, True])
def test_graphed_evaluation_equals_eager_and_follows_new_weights(tta):
    from fersearch.model import build_model
    from fersearch.train.graphs import graphed_eval
    from fersearch.train.predict import as_input, log_probs

    model = build_model(TrainConfig()).cuda().eval()
    x = torch.from_numpy(DATA.images[:1_100]).unsqueeze(1).cuda()  # two full batches of 512 and a tail
    graphed = graphed_eval(model, 512, tta, as_input)
    assert graphed is not None
    torch.testing.assert_close(graphed(x), log_probs(model, x, 512, tta), rtol=1e-4, atol=1e-4)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(0.5)  # in place, as training and load_state_dict change weights
    torch.testing.assert_close(graphed(x), log_probs(model, x, 512, tta), rtol=1e-4, atol=1e-4)


@gpu
@needs_cuda
def test_an_epoch_syncs_with_the_host_once_besides_the_divergence_checks():
    import warnings

    def syncs(epochs: int) -> int:
        torch.cuda.set_sync_debug_mode("warn")
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                result = fit(TrainConfig(epochs=epochs, **QUIET), DATA, device="cuda")
        finally:
            torch.cuda.set_sync_debug_mode("default")
        assert result.cuda_graphs
        return sum("synchroniz" in str(w.message).lower() for w in caught)

    batches = -(-DATA.subset("train")[1].size // 64)
    per_epoch = (syncs(4) - syncs(2)) / 2  # the steady state: the first epoch's captures cancel out
    # the divergence check every 16 batches, and the epoch's summary (figures and per-image record)
    assert per_epoch <= batches // 16 + 1, per_epoch
