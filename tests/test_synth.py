"""Synthetic faces: deterministic per seed, FER2013's class proportions and 80/10/10 usage,
read back by the real loader, and carrying a learnable (but not trivial) expression signal."""

from __future__ import annotations

import numpy as np
import pytest

from fersearch.data import LABELS, load, synth

FER2013_SHARE = {"Angry": 0.138, "Disgust": 0.015, "Fear": 0.143, "Happy": 0.250, "Sad": 0.169, "Surprise": 0.112,
                 "Neutral": 0.173}  # DESIGN.md counts / 35,887


def test_same_seed_same_faces_other_seed_other_faces():
    a = synth.generate(120, seed=5)
    b = synth.generate(120, seed=5)
    c = synth.generate(120, seed=6)
    for x, y in zip(a, b):
        assert np.array_equal(x, y)
    assert not np.array_equal(a[0], c[0])


def test_class_proportions_and_usage_follow_fer2013(tiny_data):
    labels, split = synth.generate(1000, seed=0)[1:]
    share = np.bincount(labels, minlength=7) / len(labels)
    for k, name in enumerate(LABELS):
        assert abs(share[k] - FER2013_SHARE[name]) < 0.02, name
    assert np.allclose(np.bincount(split) / len(split), [0.8, 0.1, 0.1], atol=0.01)
    for code in range(3):  # every class in every split, even in the 600-image fixture
        assert (np.bincount(tiny_data.labels[tiny_data.split == code], minlength=7) > 0).all()


def test_images_vary_and_use_the_grey_range(tiny_data):
    assert tiny_data.images.dtype == np.uint8 and tiny_data.images.shape == (len(tiny_data.labels), 48, 48)
    imgs = tiny_data.images.astype(np.float32)
    assert (imgs.reshape(len(imgs), -1).std(axis=1) > 5).all()  # no blank images
    assert imgs.min() < 20 and imgs.max() > 235
    assert len({im.tobytes() for im in tiny_data.images}) == len(imgs)  # no duplicates


@pytest.mark.slow  # a few seconds: generates and fits 900 faces
def test_expression_is_learnable_but_not_trivial(tiny_data):
    """A linear model on (2x2-pooled) pixels beats the majority class but is far from perfect."""
    from sklearn.linear_model import RidgeClassifier

    def pooled(images):
        return images.reshape(len(images), 24, 2, 24, 2).mean(axis=(2, 4)).reshape(len(images), -1) / 255.0

    x, y = synth.generate(900, seed=1)[:2]
    acc = (RidgeClassifier(alpha=10).fit(pooled(x), y).predict(pooled(tiny_data.images)) == tiny_data.labels).mean()
    majority = np.bincount(tiny_data.labels).max() / len(tiny_data.labels)
    assert majority + 0.05 < acc < 0.9


def test_written_file_is_read_back_by_the_real_loader(in_tmp):
    path = synth.write_synthetic("out", n=140, seed=2)
    images, labels, split = synth.generate(140, seed=2)
    data = load(path, log=lambda m: None)
    assert data.format == "fer2013" and data.synthetic
    assert np.array_equal(data.images, images) and np.array_equal(data.labels, labels)
    assert np.array_equal(data.split, split)
    assert synth.read_marker(path.parent)["sha256"] == data.sha256


def test_default_set_is_redrawn_only_when_auto_generated_and_stale(in_tmp, monkeypatch):
    monkeypatch.setattr(synth, "DEFAULT_SYNTH_N", 70)
    path = synth.default_synthetic(log=lambda m: None)
    assert synth.read_marker(path.parent)["n"] == 70
    monkeypatch.setattr(synth, "DEFAULT_SYNTH_N", 84)  # e.g. a new release changed the default
    logs = []
    synth.default_synthetic(log=logs.append)
    assert synth.read_marker(path.parent)["n"] == 84 and any("generating" in m for m in logs)
    synth.write_synthetic(path.parent, n=98, seed=1)  # the user's own set in the default place is kept
    logs = []
    synth.default_synthetic(log=logs.append)
    assert synth.read_marker(path.parent)["n"] == 98 and not any("generating" in m for m in logs)


@pytest.mark.parametrize("n", [1, 7, 13])
def test_tiny_sizes_work(n):
    images, labels, split = synth.generate(n, seed=0)
    assert images.shape == (n, 48, 48) and len(labels) == len(split) == n
