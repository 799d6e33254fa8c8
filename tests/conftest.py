"""Shared test harness: a clean Pyro state, validation on and a fixed seed for every test."""

from __future__ import annotations

import pyro
import pytest
import torch

# Tests run single-threaded: CI has 2 cores, and torch processes beside each other with
# several threads each slow down 10-100x (shared/PERFORMANCE.md).
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _clean_pyro_state():
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    with pyro.validation_enabled(True):
        yield
    pyro.clear_param_store()


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def device(request):
    """Run a test on the CPU and, when one is present, on a CUDA device."""
    if request.param == "cuda" and not torch.cuda.is_available():
        pytest.skip("CUDA is not available on this machine")
    return request.param
