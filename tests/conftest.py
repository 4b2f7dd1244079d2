"""Shared pytest fixtures: tiny synthetic data and a scratch working directory.

Other helpers may append fixtures below (str_replace); keep them tiny and fast.
"""

from __future__ import annotations

import pytest

TINY_N = 600  # ~480 train / 60 val / 60 test, every class in every split


@pytest.fixture(scope="session")
def tiny_data():
    """A small FerData from the synthetic generator (fixed seed; all 7 classes in every split).
    Session-scoped and shared: do not modify its arrays in place."""
    from fersearch.synth import synthetic_data

    data = synthetic_data(n=TINY_N, seed=0)
    for arr in (data.images, data.labels, data.split):
        arr.flags.writeable = False  # a test that mutates shared data fails loudly instead of leaking
    return data


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """Run the test inside tmp_path, so data/ and results/ defaults never touch the repo."""
    monkeypatch.chdir(tmp_path)
    return tmp_path
