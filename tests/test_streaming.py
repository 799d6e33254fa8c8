"""Data larger than memory: memory-mapped .npy and HDF5 data read row by row (bayesvae.streaming)."""

from __future__ import annotations

import tracemalloc

import h5py
import numpy as np
import pytest
import torch

import bayesvae as bv
from bayesvae import streaming
from bayesvae.data import as_tensor
from bayesvae.evaluation import log_marginal_likelihood
from bayesvae.streaming import DiskArray


def _data(n=300, d=6, seed=0):
    return np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)


def _model(d, seed=0):
    torch.manual_seed(seed)
    model = bv.VAE(prior=bv.GaussianPrior(2), likelihood=bv.Gaussian(data_dim=d), decoder=bv.MLP(2, d, hidden=(8,)))
    return model, bv.AmortizedGuide(model, hidden=(8,))


def _fit(data, d, jit=False):
    model, guide = _model(d)
    return bv.fit(model, guide, data, epochs=2, batch_size=64, lr=1e-2, seed=3, jit=jit)


def _params(result):
    return {k: v.detach().clone() for part in (result.model, result.guide) for k, v in part.state_dict().items()}


@pytest.fixture
def stored(tmp_path):
    x = _data()
    np.save(tmp_path / "x.npy", x)
    with h5py.File(tmp_path / "x.h5", "w") as f:
        f.create_dataset("x", data=x, chunks=(16, x.shape[1]))
        f.create_dataset("flat", data=x)  # contiguous: memory-mapped
    return x, tmp_path


def test_disk_array_gathers_the_same_rows(stored):
    x, path = stored
    mm = np.load(path / "x.npy", mmap_mode="r")
    idx = torch.tensor([5, 0, 299, 5, -1])
    with h5py.File(path / "x.h5", "r") as f:
        assert isinstance(DiskArray(f["flat"]).source, np.memmap) and not isinstance(DiskArray(f["x"]).source, np.memmap)
        for arr in (DiskArray(mm), DiskArray(f["x"]), DiskArray(f["flat"])):
            assert arr.shape == (300, 6) and len(arr) == 300 and arr.dtype == torch.float32
            assert torch.equal(arr[idx], torch.from_numpy(x)[idx])
            assert torch.equal(arr[10:20], torch.from_numpy(x[10:20]))
            assert torch.equal(arr.take(np.array([7, 3]))[torch.tensor([1, 0])], torch.from_numpy(x[[3, 7]]))
            with pytest.raises(IndexError, match="out of range"):
                arr[torch.tensor([300])]


@pytest.mark.parametrize("kind", ["memmap", "npy-path", "h5py", "h5-contiguous", "h5-path", "memmap-traced"])
def test_disk_data_fit_to_exactly_the_in_memory_parameters(stored, kind):
    x, path = stored
    jit = None if kind == "memmap-traced" else False  # None: the default traced step
    expected = _params(_fit(x, x.shape[1], jit))
    handle = None
    if kind in ("memmap", "memmap-traced"):
        data = np.load(path / "x.npy", mmap_mode="r")
    elif kind == "npy-path":
        data = str(path / "x.npy")
    elif kind in ("h5py", "h5-contiguous"):
        handle = h5py.File(path / "x.h5", "r")
        data = handle["x" if kind == "h5py" else "flat"]
    else:
        data = f"{path / 'x.h5'}:x"
    x_t, info = as_tensor(data)
    assert isinstance(x_t, DiskArray) and info.num_data == 300
    got = _params(_fit(data, x.shape[1], jit))
    assert got.keys() == expected.keys()
    for key in expected:
        assert torch.equal(got[key], expected[key]), key
    if handle is not None:
        handle.close()


def test_evaluation_streams_the_same_numbers(stored):
    x, path = stored
    result = _fit(x, x.shape[1])
    mem = log_marginal_likelihood(result, x, num_samples=8, seed=1)
    disk = log_marginal_likelihood(result, np.load(path / "x.npy", mmap_mode="r"), num_samples=8, seed=1)
    assert torch.equal(mem.per_point, disk.per_point)


def test_nan_in_a_late_chunk_is_reported_with_the_row_count(tmp_path, monkeypatch):
    x = _data(n=1000, d=4)
    x[[700, 701, 950], 2] = np.nan
    x[990, 3] = np.inf
    np.save(tmp_path / "x.npy", x)
    monkeypatch.setattr(streaming, "CHUNK_BYTES", 64 * 4 * 4)  # 64 rows a chunk: 16 chunks
    with pytest.raises(ValueError, match=r"NaN or inf in 4 rows \(columns \[2, 3\]; first at row 700\)"):
        as_tensor(np.load(tmp_path / "x.npy", mmap_mode="r"))


def test_support_is_checked_chunk_by_chunk(tmp_path, monkeypatch):
    x = (np.random.default_rng(0).random((500, 3)) < 0.5).astype(np.float32)
    x[480, 1] = 0.5
    np.save(tmp_path / "x.npy", x)
    monkeypatch.setattr(streaming, "CHUNK_BYTES", 100 * 3 * 4)
    torch.manual_seed(0)
    model = bv.VAE(prior=bv.GaussianPrior(2), likelihood=bv.Bernoulli(), decoder=bv.MLP(2, 3, hidden=(4,)))
    guide = bv.AmortizedGuide(model, hidden=(4,))
    with pytest.raises(ValueError, match=r"rows 400\.\.499 of 500 .*Bernoulli likelihood needs binary data"):
        bv.fit(model, guide, np.load(tmp_path / "x.npy", mmap_mode="r"), epochs=1)


def test_validation_allocates_no_data_sized_copy(tmp_path):
    # a 512 MiB file of zeros that is sparse on disk (nothing written): validating it must
    # read it chunk by chunk. tracemalloc sees numpy's and torch's CPU buffers (both report
    # to it), so the peak of Python-visible allocations bounds the largest temporary.
    n, d = 2**17, 1024
    mm = np.lib.format.open_memmap(tmp_path / "big.npy", mode="w+", dtype=np.float32, shape=(n, d))
    del mm
    data = np.load(tmp_path / "big.npy", mmap_mode="r")
    tracemalloc.start()
    try:
        x, info = as_tensor(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert isinstance(x, DiskArray) and x.validated and info.num_data == n
    assert peak < 3 * streaming.CHUNK_BYTES, f"peak {peak / 2**20:.0f} MiB for a {n * d * 4 / 2**20:.0f} MiB file"
    assert peak > 0.5 * streaming.CHUNK_BYTES  # the chunk itself was seen: the probe works


def test_read_npy_keeps_the_file_memory_mapped(tmp_path):
    x = _data()
    np.save(tmp_path / "x.npy", x)
    ds = bv.datasets.load(tmp_path / "x.npy")
    assert streaming.is_disk_backed(ds.x)
    t, _ = as_tensor(ds)
    assert isinstance(t, DiskArray) and torch.equal(t[:], torch.from_numpy(x))


def test_an_hdf5_file_with_several_datasets_needs_a_name(tmp_path):
    with h5py.File(tmp_path / "two.h5", "w") as f:
        f.create_dataset("a", data=_data(n=5))
        f.create_dataset("b", data=_data(n=7))
    with pytest.raises(ValueError, match="holds 2 datasets"):
        as_tensor(tmp_path / "two.h5")
    x, info = as_tensor(f"{tmp_path / 'two.h5'}:b")
    assert info.num_data == 7 and torch.equal(x[:], torch.from_numpy(_data(n=7)))


def test_the_cli_split_of_a_memory_mapped_file_copies_nothing_and_keeps_the_rows(tmp_path):
    from bayesvae.cli import _split

    x = _data(n=50)
    np.save(tmp_path / "x.npy", x)
    ds = bv.datasets.load(tmp_path / "x.npy")
    train, test = _split(ds, 0.2, 4)
    ref_train, ref_test = bv.datasets.Dataset(x=x).split(0.2, seed=4)
    assert isinstance(train.x, DiskArray) and (train.n, test.n, train.d) == (40, 10, 6)
    assert torch.equal(train.x[:], torch.from_numpy(ref_train.x)) and torch.equal(test.x[:], torch.from_numpy(ref_test.x))
    t, info = as_tensor(test)
    assert isinstance(t, DiskArray) and info.num_data == 10


def test_rows_are_gathered_onto_the_device(stored, device):
    x, path = stored
    t, _ = as_tensor(np.load(path / "x.npy", mmap_mode="r"), device=device)
    idx = torch.tensor([3, 1, 4], device=device)
    got = t[idx]
    assert isinstance(t, DiskArray) and got.device.type == device and t.device.type == device
    assert torch.equal(got.cpu(), torch.from_numpy(x)[[3, 1, 4]])


def _rss_file() -> int:
    for line in open("/proc/self/status"):
        if line.startswith("RssFile:"):
            return int(line.split()[1]) * 1024
    raise KeyError("RssFile")


@pytest.mark.skipif(not __import__("os").path.exists("/proc/self/status"), reason="needs Linux /proc")
def test_random_minibatches_keep_the_mapped_pages_within_budget(tmp_path):
    # 128 MiB on disk (written: the holes of a sparse file are never mapped), 1024-row random minibatches over all of it: without the
    # page releases every page would end up resident (the kernel maps 64 KiB around each
    # faulting row), with them at most about CHUNK_BYTES (32 MiB) stay mapped at a time
    n, d = 2**17, 256
    written = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=np.float32, shape=(n, d))
    written[:] = 1.0
    written.flush()
    del written
    before = _rss_file()
    x, _ = as_tensor(tmp_path / "x.npy")  # the validation pass reads every page too
    gen = torch.Generator().manual_seed(0)
    peak = _rss_file() - before
    for _ in range(64):
        x[torch.randint(0, n, (1024,), generator=gen)]
        peak = max(peak, _rss_file() - before)
    assert peak < 2 * streaming.CHUNK_BYTES + 8 * 2**20, f"{peak / 2**20:.0f} MiB of the 128 MiB file stayed mapped"
