"""Tests of bayesvae._checks: one wording for every positive-int and real-number check."""

from __future__ import annotations

import numpy as np
import pytest

from bayesvae._checks import positive_int, real_number
from bayesvae.datasets import bars, linear_gaussian
from bayesvae.models.linear import factor_analysis, factor_analysis_em, ppca, ppca_mle


@pytest.mark.parametrize("value", [1, 7, np.int64(3), np.uint8(2)])
def test_positive_int_returns_a_python_int(value):
    out = positive_int("k", value)
    assert out == int(value) and type(out) is int


@pytest.mark.parametrize(
    ("value", "error", "match"),
    [
        (0, ValueError, r"^k must be a positive int, got 0$"),
        (-3, ValueError, r"^k must be a positive int, got -3$"),
        (np.int64(0), ValueError, r"^k must be a positive int, got 0$"),
        (2.0, TypeError, r"^k must be an int, got 2\.0 of type float$"),
        (True, TypeError, r"^k must be an int, got True of type bool$"),
        ("3", TypeError, r"^k must be an int, got '3' of type str$"),
        (None, TypeError, r"^k must be an int, got None of type NoneType$"),
    ],
)
def test_positive_int_rejects(value, error, match):
    with pytest.raises(error, match=match):
        positive_int("k", value)


@pytest.mark.parametrize("value", [0, 2, -1.5, np.float32(0.25)])
def test_real_number_returns_a_float(value):
    out = real_number("noise", value)
    assert out == float(value) and type(out) is float


@pytest.mark.parametrize("value", [True, "0.5", None, 1j])
def test_real_number_rejects(value):
    with pytest.raises(TypeError, match=r"^noise must be a real number; got .* of type \w+\.$"):
        real_number("noise", value)


# The callers that had their own copy of the check now give the same messages.
@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: linear_gaussian(n=0), ValueError, "n must be a positive int, got 0"),
        (lambda: bars(side=6.0), TypeError, "side must be an int, got 6.0 of type float"),
        (lambda: ppca(5, 0), ValueError, "latent_dim must be a positive int, got 0"),
        (lambda: factor_analysis(True, 2), TypeError, "data_dim must be an int, got True"),
        (lambda: ppca_mle(np.zeros((5, 3)), 1.0), TypeError, "latent_dim must be an int, got 1.0"),
        (
            lambda: factor_analysis_em(np.zeros((5, 3)), 1, max_iter=2.5),
            TypeError,
            "max_iter must be an int, got 2.5 of type float",
        ),
    ],
)
def test_callers_share_the_wording(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_numpy_integer_sizes_give_the_same_data():
    a, _ = linear_gaussian(np.int64(30), np.int32(5), np.int16(2), seed=4)
    b, _ = linear_gaussian(30, 5, 2, seed=4)
    np.testing.assert_array_equal(a.x, b.x)
    assert ppca(np.int64(5), np.int64(2)).prior.latent_dim == 2
