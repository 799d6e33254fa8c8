"""Tests of bayesvae.datasets: readers round-trip tiny files written here, generators are replayed."""

from __future__ import annotations

import gzip
import hashlib
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.io

from bayesvae.datasets import (
    Dataset,
    bars,
    digits,
    linear_gaussian,
    load,
    read_binarized_mnist,
    read_frey_face,
    read_mnist_idx,
)

# The verified benchmark copies live in ../shared/data beside the checkout (CI clones with
# shared/ beside it); BAYESVAE_DATA overrides.
DATA = Path(os.environ.get("BAYESVAE_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))


# --------------------------------------------------------------------------- helpers


def _idx(array: np.ndarray, magic: int) -> bytes:
    """IDX bytes: big-endian magic, one big-endian uint32 per dimension, uint8 payload."""
    header = magic.to_bytes(4, "big") + b"".join(int(s).to_bytes(4, "big") for s in array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


@pytest.fixture
def images() -> np.ndarray:
    """Three 28x28 uint8 images covering 0 and 255."""
    rng = np.random.default_rng(7)
    img = rng.integers(0, 256, size=(3, 28, 28), dtype=np.uint8)
    img[0, 0, 0], img[0, 0, 1] = 0, 255
    return img


LABELS = np.array([7, 0, 3], dtype=np.uint8)


def _expected_x(images: np.ndarray) -> np.ndarray:
    return images.reshape(len(images), -1).astype(np.float32) / np.float32(255.0)


def _write(path: Path, payload: bytes, compress: bool) -> Path:
    path.write_bytes(gzip.compress(payload) if compress else payload)
    return path


def _amat(rows: np.ndarray) -> bytes:
    return b"".join(" ".join(str(int(v)) for v in row).encode() + b"\n" for row in rows)


@pytest.fixture
def amat_rows() -> np.ndarray:
    rng = np.random.default_rng(3)
    return (rng.random((2, 784)) < 0.3).astype(np.uint8)


# --------------------------------------------------------------------------- Dataset


def test_dataset_converts_and_reports_shape():
    ds = Dataset(np.arange(12).reshape(4, 3), labels=[0, 1, 0, 1], columns=["a", "b", "c"])
    assert (ds.n, ds.d) == (4, 3)
    assert ds.x.dtype == np.float32 and ds.x.flags.c_contiguous
    assert ds.labels.dtype == np.int64
    assert ds.columns == ("a", "b", "c")
    with pytest.raises(AttributeError):
        ds.name = "other"  # frozen


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"x": np.zeros(5)}, ValueError, r"2-D array of shape \(n, d\); got shape \(5,\)"),
        ({"x": np.zeros((0, 3))}, ValueError, "non-empty"),
        ({"x": np.array([["a", "b"]])}, TypeError, "must be numeric"),
        ({"x": np.zeros((3, 2)), "labels": np.zeros(2, int)}, ValueError, r"shape \(3,\)"),
        ({"x": np.zeros((3, 2)), "labels": np.zeros(3)}, TypeError, "labels must be integers"),
        ({"x": np.zeros((3, 6)), "image_shape": (2, 2)}, ValueError, "product must equal d"),
        ({"x": np.zeros((3, 2)), "columns": ("a",)}, ValueError, "1 names but x has 2 columns"),
    ],
)
def test_dataset_rejects_inconsistent_fields(kwargs, error, match):
    with pytest.raises(error, match=match):
        Dataset(**kwargs)


def test_split_is_stratified_disjoint_and_reproducible():
    labels = np.repeat([0, 1, 2], [50, 30, 20])
    ds = Dataset(np.arange(100.0)[:, None], labels=labels, name="toy")
    train, test = ds.split(0.2, seed=4)
    assert (train.n, test.n) == (80, 20)
    ids = np.concatenate([train.x[:, 0], test.x[:, 0]])
    np.testing.assert_array_equal(np.sort(ids), np.arange(100.0))
    # rows keep their labels, and each class keeps its share (exact here: 10, 6, 4)
    np.testing.assert_array_equal(train.labels, labels[train.x[:, 0].astype(int)])
    np.testing.assert_array_equal(np.bincount(test.labels), [10, 6, 4])
    assert (train.name, test.name) == ("toy[train]", "toy[test]")
    again, _ = ds.split(0.2, seed=4)
    np.testing.assert_array_equal(again.x, train.x)


def test_split_without_labels_and_bad_fraction():
    train, test = Dataset(np.zeros((10, 2))).split(0.3, seed=0)
    assert (train.n, test.n, train.labels) == (7, 3, None)
    for bad in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match=r"test_fraction must lie in \(0, 1\)"):
            Dataset(np.zeros((10, 2))).split(bad)


# --------------------------------------------------------------------------- digits


def test_digits_scaled_to_unit_interval():
    ds = digits()
    assert ds.x.shape == (1797, 64) and ds.x.dtype == np.float32
    assert ds.x.min() == 0.0 and ds.x.max() == 1.0
    np.testing.assert_array_equal(ds.x * 16, np.round(ds.x * 16))  # raw counts 0..16
    assert ds.labels.shape == (1797,) and set(np.unique(ds.labels)) == set(range(10))
    assert ds.image_shape == (8, 8)
    assert ds.columns[:2] == ("px_0_0", "px_0_1") and ds.columns[9] == "px_1_1"
    assert ds.columns[-1] == "px_7_7"


def test_digits_binarized():
    grey, binary = digits(), digits(binarize=True, threshold=0.3)
    assert set(np.unique(binary.x)) == {0.0, 1.0}
    np.testing.assert_array_equal(binary.x, (grey.x > 0.3).astype(np.float32))
    np.testing.assert_array_equal(binary.labels, grey.labels)
    assert binary.name == "digits-binary"


@pytest.mark.parametrize("threshold", [0.0, 1.0, -0.2, 3])
def test_digits_threshold_outside_unit_interval(threshold):
    with pytest.raises(ValueError, match=r"threshold must lie in \(0, 1\)"):
        digits(binarize=True, threshold=threshold)


def test_digits_threshold_type():
    with pytest.raises(TypeError, match="threshold must be a real number"):
        digits(threshold="0.5")


# --------------------------------------------------------------------------- linear_gaussian


def test_linear_gaussian_replays_documented_draw_order():
    ds, truth = linear_gaussian(n=50, data_dim=6, latent_dim=2, noise=0.3, seed=11)
    rng = np.random.default_rng(11)
    w = rng.standard_normal((6, 2))
    mu = rng.standard_normal(6)
    z = rng.standard_normal((50, 2))
    eps = rng.standard_normal((50, 6))
    np.testing.assert_array_equal(truth["W"], w)
    np.testing.assert_array_equal(truth["mu"], mu)
    np.testing.assert_array_equal(truth["z"], z)
    assert truth["noise"] == 0.3
    np.testing.assert_array_equal(ds.x, (z @ w.T + mu + 0.3 * eps).astype(np.float32))
    assert ds.x.shape == (50, 6) and ds.labels is None


def test_linear_gaussian_covariance_matches_ppca():
    # Marginally x ~ N(mu, Sigma), Sigma = W W^T + sigma^2 I. For Gaussian data an entry of the
    # sample covariance has Var(S_ij) = (S_ii S_jj + S_ij^2) / (n - 1). With D = 5 there are 15
    # distinct entries; P(|N(0,1)| > 5) = 5.7e-7 each, so a false failure has probability
    # < 1e-5 (and the seed is fixed). Leaving out the noise term shifts each diagonal entry by
    # sigma^2 = 0.64, about 20 standard errors here, so that mistake is caught.
    n, noise = 20_000, 0.8
    ds, truth = linear_gaussian(n=n, data_dim=5, latent_dim=2, noise=noise, seed=2)
    w = truth["W"]
    sigma = w @ w.T + noise**2 * np.eye(5)
    sample = np.cov(ds.x.astype(np.float64), rowvar=False)
    se = np.sqrt((np.outer(np.diag(sigma), np.diag(sigma)) + sigma**2) / (n - 1))
    assert np.max(np.abs(sample - sigma) / se) < 5
    # and the mean: Var(xbar_d) = Sigma_dd / n
    mean_z = (ds.x.mean(axis=0, dtype=np.float64) - truth["mu"]) / np.sqrt(np.diag(sigma) / n)
    assert np.max(np.abs(mean_z)) < 5


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"n": 0}, ValueError, "n must be a positive int, got 0"),
        ({"n": 10.5}, TypeError, "n must be an int, got 10.5 of type float"),
        ({"data_dim": -1}, ValueError, "data_dim must be a positive int, got -1"),
        ({"latent_dim": 0}, ValueError, "latent_dim must be a positive int, got 0"),
        ({"latent_dim": True}, TypeError, "latent_dim must be an int, got True of type bool"),
        ({"data_dim": 3, "latent_dim": 3}, ValueError, "latent_dim must be smaller than data_dim"),
        ({"noise": 0.0}, ValueError, "noise .* must be positive"),
        ({"noise": "0.5"}, TypeError, "noise must be a real number"),
    ],
)
def test_linear_gaussian_rejects_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        linear_gaussian(**kwargs)


# --------------------------------------------------------------------------- bars


def test_bars_features_are_the_four_disjoint_quadrant_shapes():
    _, truth = bars(n=5)
    a = truth["A"]
    assert a.shape == (4, 36) and set(np.unique(a)) == {0.0, 1.0}
    gram = a @ a.T
    np.testing.assert_array_equal(gram - np.diag(np.diag(gram)), 0)  # no shared pixel
    np.testing.assert_array_equal(np.diag(gram), [5, 8, 6, 5])  # plus, ring, triangle, T
    plus = a[0].reshape(6, 6)[:3, :3]
    np.testing.assert_array_equal(plus, [[0, 1, 0], [1, 1, 1], [0, 1, 0]])


def test_bars_replays_and_scales_up():
    ds, truth = bars(n=40, side=6, noise=0.25, prob=0.3, seed=5)
    rng = np.random.default_rng(5)
    z = (rng.random((40, 4)) < 0.3).astype(np.int64)
    eps = rng.standard_normal((40, 36))
    np.testing.assert_array_equal(truth["Z"], z)
    assert truth["Z"].dtype == np.int64
    np.testing.assert_array_equal(ds.x, (z @ truth["A"] + 0.25 * eps).astype(np.float32))
    assert ds.image_shape == (6, 6)
    big, big_truth = bars(n=3, side=12, noise=0.0, seed=5)
    assert big.image_shape == (12, 12) and big_truth["A"].shape == (4, 144)
    np.testing.assert_array_equal(
        big_truth["A"][1].reshape(12, 12), np.kron(truth["A"][1].reshape(6, 6), np.ones((2, 2)))
    )
    np.testing.assert_array_equal(big.x, big_truth["Z"] @ big_truth["A"])  # noise 0: exact


def test_bars_feature_frequencies():
    # Each column of Z is n Bernoulli(p) draws: its mean has SE sqrt(p(1-p)/n). Four columns
    # within 4 SE fail by chance with probability 4 * 6.3e-5 = 2.5e-4 (seed fixed). With
    # n = 4000, p = 0.3 the SE is 0.0072, so a frequency off by 0.03 would be caught.
    n, p = 4000, 0.3
    _, truth = bars(n=n, prob=p, seed=1)
    se = np.sqrt(p * (1 - p) / n)
    assert np.max(np.abs(truth["Z"].mean(axis=0) - p)) < 4 * se


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"n": 0}, ValueError, "n must be a positive int, got 0"),
        ({"side": 8}, ValueError, "side must be a multiple of 6"),
        ({"side": 6.0}, TypeError, "side must be an int, got 6.0 of type float"),
        ({"noise": -0.1}, ValueError, "noise .* must be >= 0"),
        ({"prob": 0.0}, ValueError, r"prob must lie in \(0, 1\)"),
        ({"prob": 1.0}, ValueError, r"prob must lie in \(0, 1\)"),
    ],
)
def test_bars_rejects_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        bars(**kwargs)


# --------------------------------------------------------------------------- MNIST IDX


@pytest.mark.parametrize(
    ("compress", "image_name", "label_name"),
    [
        (True, "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
        (False, "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
        # gzip is detected from the bytes 1f 8b, not from the name
        (True, "gz-content-idx3-ubyte", "gz-labels.bin"),
        (False, "raw-content-idx3-ubyte.gz", "raw-labels.gz"),
    ],
)
def test_read_mnist_idx_round_trip(tmp_path, images, compress, image_name, label_name):
    img = _write(tmp_path / image_name, _idx(images, 0x803), compress)
    lab = _write(tmp_path / label_name, _idx(LABELS, 0x801), compress)
    ds = read_mnist_idx(img, lab)
    assert ds.x.shape == (3, 784) and ds.x.dtype == np.float32
    np.testing.assert_array_equal(ds.x, _expected_x(images))
    assert ds.x[0, 0] == 0.0 and ds.x[0, 1] == 1.0
    np.testing.assert_array_equal(ds.labels, LABELS.astype(np.int64))
    assert ds.labels.dtype == np.int64
    assert ds.image_shape == (28, 28)
    assert read_mnist_idx(str(img)).labels is None


def test_read_mnist_idx_binarize_replays_seed(tmp_path, images):
    img = _write(tmp_path / "a-images-idx3-ubyte", _idx(images, 0x803), False)
    ds = read_mnist_idx(img, binarize=True, seed=5)
    rng = np.random.default_rng(5)
    expected = (rng.random((3, 784), dtype=np.float32) < _expected_x(images)).astype(np.float32)
    np.testing.assert_array_equal(ds.x, expected)
    assert ds.x[0, 0] == 0.0 and ds.x[0, 1] == 1.0  # pixels 0 and 255 are deterministic
    np.testing.assert_array_equal(
        read_mnist_idx(img, binarize=True).x, read_mnist_idx(img, binarize=True, seed=0).x
    )


def test_read_mnist_idx_errors(tmp_path, images):
    good = _idx(images, 0x803)
    labels = _idx(LABELS, 0x801)
    with pytest.raises(FileNotFoundError, match="No such file"):
        read_mnist_idx(tmp_path / "missing-images-idx3-ubyte")
    cases = {
        "truncated": (
            good[:-10],
            r"is truncated: its header declares shape \(3, 28, 28\), i.e. 2352 data bytes, but 2342",
        ),
        "extra": (good + b"\0", "has extra bytes at the end"),
        "short": (good[:2], "too short for the header"),
        "header": (good[:10], "header needs 16 bytes"),
        "labels_as_images": (
            labels,
            "magic number is 0x00000801, expected 0x00000803. It is an IDX1 labels file",
        ),
        "garbage": (b"hello world, this is not IDX", "magic number is 0x68656C6C"),
    }
    for name, (payload, match) in cases.items():
        path = _write(tmp_path / f"{name}-images-idx3-ubyte", payload, False)
        with pytest.raises(ValueError, match=match):
            read_mnist_idx(path)
    img = _write(tmp_path / "ok-images-idx3-ubyte", good, False)
    wrong_count = _write(tmp_path / "two-labels", _idx(LABELS[:2], 0x801), False)
    with pytest.raises(ValueError, match="holds 2 labels but .* holds 3 images"):
        read_mnist_idx(img, wrong_count)
    with pytest.raises(ValueError, match="It is an IDX3 images file: pass it as images_path"):
        read_mnist_idx(img, img)
    cut_gz = tmp_path / "cut-images-idx3-ubyte.gz"
    cut_gz.write_bytes(gzip.compress(good)[:-20])
    with pytest.raises(ValueError, match="gzip magic bytes 1f 8b but cannot be decompressed"):
        read_mnist_idx(cut_gz)


# --------------------------------------------------------------------------- binarized MNIST


@pytest.mark.parametrize("compress", [False, True])
def test_read_binarized_mnist_round_trip(tmp_path, amat_rows, compress):
    name = "tiny.amat.gz" if compress else "tiny.amat"
    ds = read_binarized_mnist(_write(tmp_path / name, _amat(amat_rows), compress))
    assert ds.x.shape == (2, 784) and ds.x.dtype == np.float32
    np.testing.assert_array_equal(ds.x, amat_rows)
    assert ds.labels is None and ds.image_shape == (28, 28) and ds.name == "tiny"


def test_read_binarized_mnist_tolerates_crlf_and_missing_final_newline(tmp_path, amat_rows):
    text = _amat(amat_rows)
    for i, payload in enumerate([text.replace(b"\n", b"\r\n"), text[:-1], text + b"\n"]):
        ds = read_binarized_mnist(_write(tmp_path / f"v{i}.amat", payload, False))
        np.testing.assert_array_equal(ds.x, amat_rows)
    # gzip content under a plain .amat name is detected from the magic bytes
    ds = read_binarized_mnist(_write(tmp_path / "gz-inside.amat", text, True))
    np.testing.assert_array_equal(ds.x, amat_rows)


def test_read_binarized_mnist_errors(tmp_path, amat_rows):
    text = _amat(amat_rows)
    first, second = text.split(b"\n")[:2]
    cases = {
        "short_row": (first + b"\n" + second[:-2] + b"\n", "row 2 has 783 values"),
        "truncated": (text[:1000], "row 1 has 500 values"),
        "bad_value": (
            first[:8] + b"2" + first[9:] + b"\n",
            r"row 1, column 5 is '2'; .* must be 0 or 1",
        ),
        "double_space": (
            first[:1] + b"  " + first[2:] + b"\n",
            "row 1 has 784 values but they are not separated by single spaces",
        ),
        "empty": (b"", "is empty"),
    }
    for name, (payload, match) in cases.items():
        with pytest.raises(ValueError, match=match):
            read_binarized_mnist(_write(tmp_path / f"{name}.amat", payload, False))
    with pytest.raises(FileNotFoundError, match="No such file"):
        read_binarized_mnist(tmp_path / "missing.amat")


# --------------------------------------------------------------------------- Frey Face


def test_read_frey_face_round_trip(tmp_path):
    ff = np.random.default_rng(0).integers(0, 256, size=(560, 3), dtype=np.uint8)
    path = tmp_path / "frey.mat"
    scipy.io.savemat(path, {"ff": ff})
    ds = read_frey_face(path)
    assert ds.x.shape == (3, 560) and ds.image_shape == (28, 20) and ds.labels is None
    np.testing.assert_array_equal(ds.x, ff.T.astype(np.float32) / np.float32(255.0))
    np.testing.assert_array_equal(
        ds.x[1].reshape(28, 20), ff[:, 1].reshape(28, 20) / np.float32(255.0)
    )


def test_read_frey_face_errors(tmp_path):
    cases = {
        "no_ff": (
            {"faces": np.zeros((560, 2), np.uint8)},
            r"no variable 'ff' \(variables found: \['faces'\]\)",
        ),
        "wrong_shape": (
            {"ff": np.zeros((559, 2), np.uint8)},
            r"has shape \(559, 2\); expected \(560, n_frames\)",
        ),
        "transposed": ({"ff": np.zeros((2, 560), np.uint8)}, "It looks transposed"),
        "out_of_range": ({"ff": np.full((560, 2), 300.0)}, r"pixel values in \[0, 255\]"),
    }
    for name, (contents, match) in cases.items():
        path = tmp_path / f"{name}.mat"
        scipy.io.savemat(path, contents)
        with pytest.raises(ValueError, match=match):
            read_frey_face(path)
    good = tmp_path / "good.mat"
    scipy.io.savemat(good, {"ff": np.zeros((560, 2), np.uint8)})
    for name, payload in {
        "garbage": b"not a mat file " * 20,
        "cut": good.read_bytes()[:200],
    }.items():
        path = tmp_path / f"{name}.mat"
        path.write_bytes(payload)
        with pytest.raises(ValueError, match="could not be read as a MATLAB .mat file"):
            read_frey_face(path)
    with pytest.raises(FileNotFoundError, match="No such file"):
        read_frey_face(tmp_path / "missing.mat")


# --------------------------------------------------------------------------- load


def test_load_names():
    assert load("digits").x.shape == (1797, 64)
    binary = load("digits-binary", threshold=0.25)
    np.testing.assert_array_equal(binary.x, digits(binarize=True, threshold=0.25).x)


def test_load_csv_keeps_columns_and_rejects_strings(tmp_path):
    path = tmp_path / "table.csv"
    path.write_text("age,score,flag\n18,0.5,True\n90,-1.25,False\n")
    ds = load(path)
    assert ds.columns == ("age", "score", "flag") and ds.name == "table"
    np.testing.assert_array_equal(ds.x, np.array([[18, 0.5, 1], [90, -1.25, 0]], np.float32))
    bad = tmp_path / "cities.csv"
    bad.write_text("age,city\n18,Paris\n90,Oslo\n")
    with pytest.raises(
        TypeError, match=r"Column 'city' of .* is not numeric \(dtype .*, e.g. 'Paris'\)"
    ):
        load(bad)
    missing = tmp_path / "holes.csv"
    missing.write_text("a,b\n1,2\n3,\n")
    with pytest.raises(ValueError, match="Column 'b' of .* has 1 missing or non-finite values"):
        load(missing)
    with pytest.raises(
        TypeError, match=r"load\(\) got keyword arguments \['sep'\], but the .csv reader takes none"
    ):
        load(path, sep=";")


def test_load_parquet(tmp_path):
    pytest.importorskip("pyarrow")
    path = tmp_path / "t.parquet"
    pd.DataFrame({"a": [1.5, 2.0], "b": [3, 4]}).to_parquet(path)
    ds = load(path)
    assert ds.columns == ("a", "b")
    np.testing.assert_array_equal(ds.x, [[1.5, 3], [2.0, 4]])


def test_load_npy(tmp_path):
    flat = np.arange(6, dtype=np.int16).reshape(2, 3)
    np.save(tmp_path / "flat.npy", flat)
    ds = load(tmp_path / "flat.npy")
    assert ds.image_shape is None
    np.testing.assert_array_equal(ds.x, flat)
    cube = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    np.save(tmp_path / "cube.npy", cube)
    ds = load(str(tmp_path / "cube.npy"))
    assert ds.image_shape == (3, 4) and ds.x.shape == (2, 12)
    np.testing.assert_array_equal(ds.x, cube.reshape(2, 12))
    np.save(tmp_path / "vector.npy", np.arange(3.0))
    with pytest.raises(ValueError, match=r"shape \(3,\); expected \(n, d\)"):
        load(tmp_path / "vector.npy")
    np.save(tmp_path / "nan.npy", np.array([[1.0, np.nan]]))
    with pytest.raises(ValueError, match="1 NaN or infinite values"):
        load(tmp_path / "nan.npy")
    np.save(tmp_path / "text.npy", np.array([["a", "b"]]))
    with pytest.raises(TypeError, match="expected numbers"):
        load(tmp_path / "text.npy")
    np.save(tmp_path / "objects.npy", np.array([[1, "a"]], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="object array .*never loads pickled data"):
        load(tmp_path / "objects.npy")


@pytest.mark.parametrize("compress", [True, False])
def test_load_idx_finds_labels_next_to_images(tmp_path, images, compress):
    gz = ".gz" if compress else ""
    img = _write(tmp_path / f"train-images-idx3-ubyte{gz}", _idx(images, 0x803), compress)
    ds = load(img)
    assert ds.labels is None  # no labels file yet
    _write(tmp_path / f"train-labels-idx1-ubyte{gz}", _idx(LABELS, 0x801), compress)
    ds = load(img)
    np.testing.assert_array_equal(ds.labels, LABELS)
    np.testing.assert_array_equal(ds.x, _expected_x(images))
    assert load(img, labels_path=None).labels is None
    assert set(np.unique(load(img, binarize=True, seed=1).x)) <= {0.0, 1.0}


def test_load_dispatches_amat_and_mat(tmp_path, amat_rows):
    amat = _write(tmp_path / "b.amat.gz", _amat(amat_rows), True)
    np.testing.assert_array_equal(load(amat).x, amat_rows)
    mat = tmp_path / "f.mat"
    scipy.io.savemat(mat, {"ff": np.full((560, 2), 255, np.uint8)})
    assert load(mat).x.shape == (2, 560) and load(mat).x.max() == 1.0


@pytest.mark.parametrize("name", ["mnist", "digits_binary", "data.txt", "x.npz"])
def test_load_unknown_name(name):
    with pytest.raises(
        ValueError,
        match=rf"Unknown data set '{name}': give one of the names \['digits', 'digits-binary'\] or a path ending in .*'.csv'",
    ):
        load(name)


def test_load_missing_file_with_known_suffix(tmp_path):
    for name in ("a.csv", "a.npy", "a.amat", "a-images-idx3-ubyte.gz", "a.mat"):
        with pytest.raises(FileNotFoundError, match="No such file"):
            load(tmp_path / name)


# --------------------------------------------------------------------------- real files


MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
# sha256 of the uint8 pixels ff.T (1965 x 560, C order), from the data README
FREY_SHA256 = "2438ba4f0d2a6bd8bac43de756141eaa33c8d248dd613d464bdb1210d9b7af78"


def _real(relative: str) -> Path:
    path = DATA / relative
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    return path


@pytest.mark.slow
@pytest.mark.parametrize(
    ("split", "n", "mean", "counts"),
    [("t10k", 10000, 0.13251, MNIST_TEST_COUNTS), ("train", 60000, 0.13066, MNIST_TRAIN_COUNTS)],
)
def test_real_mnist_idx(split, n, mean, counts):
    _real(f"mnist/{split}-labels-idx1-ubyte.gz")
    ds = load(_real(f"mnist/{split}-images-idx3-ubyte.gz"))  # labels found next to the images
    assert ds.x.shape == (n, 784) and ds.image_shape == (28, 28)
    assert abs(ds.x.mean(dtype=np.float64) - mean) < 1e-4
    np.testing.assert_array_equal(np.bincount(ds.labels), counts)


@pytest.mark.slow
def test_real_binarized_mnist_test():
    ds = read_binarized_mnist(_real("binarized_mnist/binarized_mnist_test.amat.gz"))
    assert ds.x.shape == (10000, 784)
    assert abs(ds.x.mean(dtype=np.float64) - 0.13251) < 1e-4


@pytest.mark.slow
def test_real_frey_face():
    ds = read_frey_face(_real("frey_face/frey_rawface.mat"))
    assert ds.x.shape == (1965, 560) and ds.image_shape == (28, 20)
    pixels = np.rint(ds.x * 255).astype(np.uint8)  # x * 255 rounds back to the stored pixels
    assert hashlib.sha256(pixels.tobytes()).hexdigest() == FREY_SHA256
