"""Shared fixtures: the array backends, and a deterministic Hypothesis profile for CI."""
from __future__ import annotations

import importlib
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

settings.register_profile("ci", derandomize=True, max_examples=40, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", max_examples=100, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def _available_backends():
    names = ["numpy"]
    try:
        importlib.import_module("array_api_strict")
        names.append("array_api_strict")
    except ImportError:  # pragma: no cover - test extra not installed
        pass
    return names


@pytest.fixture(autouse=True, scope="session")
def _kernel_cache(tmp_path_factory):
    """Generated kernels go to a folder of this test session, not the user's cache."""
    os.environ["SAVIC_KERNEL_CACHE"] = str(tmp_path_factory.mktemp("kernels"))


@pytest.fixture(params=_available_backends())
def backend(request):
    """Name of an array backend usable on this machine (CuPy tests live in test_gpu.py)."""
    return request.param


@pytest.fixture
def rng():
    return np.random.default_rng(20240601)
