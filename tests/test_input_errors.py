"""Bad inputs get clear errors (issue 15, item 8): each message names what was wrong."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest
import torch

import bayesvae as bv
from bayesvae.cli import main
from bayesvae.data import as_tensor, resolve_device
from bayesvae.datasets import load


def test_a_negative_validation_fraction_is_refused(capsys, tmp_path):
    for bad in ("-0.1", "1", "nan"):
        code = main(["fit", "--validation-fraction", bad, "--epochs", "1", "--out", str(tmp_path / "run"), "--quiet"])
        err = capsys.readouterr().err
        assert code == 2 and "--validation-fraction must lie in [0, 1)" in err and bad in err.lower()
    assert not (tmp_path / "run").exists()


def test_a_header_only_csv_has_no_rows(tmp_path):
    (tmp_path / "h.csv").write_text("a,b,c\n")
    with pytest.raises(ValueError, match=r"has a header \(3 columns: \['a', 'b', 'c'\]\) but no rows"):
        load(tmp_path / "h.csv")


def test_a_garbage_npy_is_not_a_valid_npy_and_nothing_is_unpickled(tmp_path):
    (tmp_path / "g.npy").write_bytes(b"this is not numpy" * 4)
    with pytest.raises(ValueError, match=r"is not a valid \.npy file.*never loads pickled data") as info:
        load(tmp_path / "g.npy")
    assert "allow_pickle" not in str(info.value)
    # a pickle under a .npy name: refused from its first bytes, never unpickled
    (tmp_path / "p.npy").write_bytes(pickle.dumps({"x": 1}))
    with pytest.raises(ValueError, match=r"is not a valid \.npy file"):
        load(tmp_path / "p.npy")
    # a real .npy of Python objects (pickled inside): refused without unpickling
    np.save(tmp_path / "o.npy", np.array([[{"a": 1}]], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match=r"holds an object array \(pickled Python objects, dtype object\).*never loads pickled"):
        load(tmp_path / "o.npy")
    # a truncated header
    np.save(tmp_path / "t.npy", np.zeros((3, 2)))
    (tmp_path / "t.npy").write_bytes((tmp_path / "t.npy").read_bytes()[:20])
    with pytest.raises(ValueError, match=r"is not a valid \.npy file"):
        load(tmp_path / "t.npy")


def test_an_invalid_cuda_device_string_is_a_value_error_naming_it(capsys, tmp_path):
    with pytest.raises(ValueError, match=r"invalid device 'cuda:abc'.*'cuda:K' with an integer index"):
        resolve_device("cuda:abc")
    with pytest.raises(ValueError, match=r"invalid device 'cuda:abc'"):
        as_tensor(np.zeros((2, 2)), device="cuda:abc")
    model = bv.VAE(prior=bv.GaussianPrior(2), likelihood=bv.Gaussian(data_dim=3), decoder=bv.MLP(2, 3, hidden=(4,)))
    guide = bv.AmortizedGuide(model, hidden=(4,))
    with pytest.raises(ValueError, match=r"invalid device 'cuda:abc'"):
        bv.fit(model, guide, np.zeros((4, 3), dtype=np.float32), epochs=1, device="cuda:abc")


@pytest.mark.parametrize(
    "data",
    [
        np.ones((3, 2)) + 1j,
        torch.ones(3, 2, dtype=torch.complex64),
        np.ma.masked_array(np.ones((3, 2), dtype=np.complex64)),
    ],
    ids=["ndarray", "tensor", "masked"],
)
def test_complex_data_are_refused_naming_the_dtype(data):
    with pytest.raises(TypeError, match=r"data must be real numbers, got a complex (array|tensor) \(dtype (torch\.)?complex(64|128)\)"):
        as_tensor(data)


def test_complex_dataframe_columns_and_npy_files_are_refused(tmp_path):
    frame = pd.DataFrame({"re": [1.0, 2.0], "z": np.array([1 + 1j, 2 - 1j])})
    with pytest.raises(TypeError, match=r"column\(s\) \['z'\] are complex"):
        as_tensor(frame)
    np.save(tmp_path / "c.npy", np.ones((3, 2), dtype=np.complex64))
    with pytest.raises(TypeError, match=r"holds a complex array \(dtype complex64\)"):
        load(tmp_path / "c.npy")
    with pytest.raises(TypeError, match=r"complex array \(dtype complex64\)"):
        as_tensor(np.load(tmp_path / "c.npy", mmap_mode="r"))


def test_duplicate_dataframe_columns_are_a_clear_value_error():
    frame = pd.DataFrame(np.ones((3, 4)), columns=["a", "b", "a", "c"])
    with pytest.raises(ValueError, match=r"column names must be unique; \['a'\] appear more than once"):
        as_tensor(frame)


def test_a_masked_array_is_refused_unless_missing_cells_are_modelled():
    values = np.arange(12, dtype=np.float64).reshape(4, 3)
    masked = np.ma.masked_array(values, mask=[[0, 1, 0], [0, 0, 0], [1, 1, 0], [0, 0, 0]])
    with pytest.raises(ValueError, match=r"masked array with 3 masked cells in 2 rows; pass missing='model'"):
        as_tensor(masked)
    x, info, seen = as_tensor(masked, missing="model")
    assert torch.equal(seen, torch.from_numpy(~np.ma.getmaskarray(masked)))
    assert torch.equal(x, torch.from_numpy(np.where(seen.numpy(), values, 0.0)).float())
    # the mask is honoured even where a masked cell holds NaN or inf (they are not data)
    values[0, 1], values[2, 0] = np.nan, np.inf
    x2, _, seen2 = as_tensor(np.ma.masked_array(values, mask=masked.mask), missing="model")
    assert torch.equal(x2, x) and torch.equal(seen2, seen)
    # nothing masked: an ordinary array
    plain, _ = as_tensor(np.ma.masked_array(np.ones((2, 2))))
    assert torch.equal(plain, torch.ones(2, 2))


def test_a_masked_array_fits_with_its_cells_missing():
    rng = np.random.default_rng(0)
    values = rng.normal(size=(40, 3))
    mask = rng.random((40, 3)) < 0.2
    model = bv.VAE(prior=bv.GaussianPrior(2), likelihood=bv.Gaussian(data_dim=3), decoder=bv.MLP(2, 3, hidden=(4,)))
    guide = bv.AmortizedGuide(model, hidden=(4,))
    with pytest.raises(ValueError, match="masked array"):
        bv.fit(model, guide, np.ma.masked_array(values, mask=mask), epochs=1)
    torch.manual_seed(0)
    model = bv.VAE(prior=bv.GaussianPrior(2), likelihood=bv.Gaussian(data_dim=3), decoder=bv.MLP(2, 3, hidden=(4,)))
    guide = bv.AmortizedGuide(model, hidden=(4,))
    a = bv.fit(model, guide, np.ma.masked_array(values, mask=mask), epochs=2, seed=1, missing="model", jit=False)
    torch.manual_seed(0)
    model = bv.VAE(prior=bv.GaussianPrior(2), likelihood=bv.Gaussian(data_dim=3), decoder=bv.MLP(2, 3, hidden=(4,)))
    guide = bv.AmortizedGuide(model, hidden=(4,))
    b = bv.fit(model, guide, np.where(mask, np.nan, values), epochs=2, seed=1, missing="model", jit=False)
    assert a.history["elbo"].tolist() == b.history["elbo"].tolist()
