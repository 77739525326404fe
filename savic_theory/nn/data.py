"""Image data for the ResNet18 experiments: readers, client splits, batches on the device.

Sources, each returning an :class:`ImageSet` of ``uint8`` images ``(N, C, 32, 32)``:

* :func:`load_cifar10`: the ``cifar-10-batches-py`` folder of the CIFAR-10 "python version"
  archive (it cannot be downloaded from here; a clear error names the path it expected);
* :func:`load_fashion_mnist`: the IDX files that Debian's ``dataset-fashion-mnist`` installs in
  ``/usr/share/datasets/fashion-mnist``, padded from 28×28 to 32×32;
* :func:`synthetic_images`: a learnable random data set for tests and smoke runs.

:func:`client_parts` distributes the training images over ``M`` clients (iid, Dirichlet(α) over
labels, label-sorted shards) with :func:`savic_theory.problems.data.split_clients`.
:class:`DeviceData` keeps images and labels on the device and builds each client's minibatch
there, with random-crop and flip augmentation done on tensors.
"""
from __future__ import annotations

import gzip
import os
import pickle
import zlib
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch.nn import functional as F

from ..problems.data import SPLITS, split_clients

__all__ = ["ImageSet", "DATASETS", "SPLITS", "FASHION_MNIST_ROOT", "CIFAR10_ROOT", "load_cifar10",
           "load_fashion_mnist", "read_idx", "synthetic_images", "load_images", "client_parts",
           "DeviceData", "augment"]

#: where Debian's ``dataset-fashion-mnist`` package puts its files
FASHION_MNIST_ROOT = "/usr/share/datasets/fashion-mnist"
#: default location of the unpacked CIFAR-10 python archive
CIFAR10_ROOT = "data/cifar-10-batches-py"
#: data sets :func:`load_images` knows
DATASETS = ("synthetic", "fashion_mnist", "cifar10")


class ImageSet(NamedTuple):
    """A labelled image data set held as host arrays.

    Attributes
    ----------
    train_x, test_x : uint8 arrays (N, C, H, W)
    train_y, test_y : int64 arrays (N,) with values in ``[0, classes)``
    classes : int
    name : str
    """

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    classes: int
    name: str


# ----------------------------------------------------------------------------------- readers
def load_cifar10(root: str | os.PathLike = CIFAR10_ROOT) -> ImageSet:
    """Read CIFAR-10 from the ``cifar-10-batches-py`` folder (``data_batch_1..5``, ``test_batch``).

    ``root`` may be that folder or the folder that contains it. The batches are Python pickles:
    read only a copy you trust.

    Parameters
    ----------
    root : path

    Returns
    -------
    ImageSet with 50000 training and 10000 test images ``(N, 3, 32, 32)``.

    Example
    -------
    >>> load_cifar10("/nonexistent")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    FileNotFoundError: CIFAR-10 not found: expected the folder /nonexistent/cifar-10-batches-py ...
    """
    root = Path(root)
    folder = root if (root / "data_batch_1").is_file() else root / "cifar-10-batches-py"
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        shown = root if root.name == "cifar-10-batches-py" else folder
        raise FileNotFoundError(
            f"CIFAR-10 not found: expected the folder {shown} holding data_batch_1 ... data_batch_5 and "
            f"test_batch (missing: {', '.join(missing)}); unpack cifar-10-python.tar.gz there or set "
            "data.root to the folder that holds it (it cannot be downloaded from here)")
    parts = []
    for n in names:
        try:
            with (folder / n).open("rb") as fh:
                batch = pickle.load(fh, encoding="bytes")
            x = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
            y = np.asarray(batch[b"labels"], dtype=np.int64)
        except Exception as exc:  # any damage (not a pickle, truncated, another object) names the file
            if isinstance(exc, (OSError, MemoryError)):  # the disk or the machine, not the file
                raise
            raise ValueError(f"{folder / n} is not a CIFAR-10 python batch "
                             f"({type(exc).__name__}: {exc})") from None
        _check_labels(y, 10, folder / n)
        parts.append((x, y))
    train_x = np.concatenate([p[0] for p in parts[:5]])
    train_y = np.concatenate([p[1] for p in parts[:5]])
    return ImageSet(train_x, train_y, parts[5][0], parts[5][1], 10, "cifar10")


def _check_labels(y: np.ndarray, classes: int, path: Path) -> None:
    """A ValueError naming ``path`` when a label lies outside ``[0, classes)`` (a wrong or damaged
    file, which would otherwise fail deep inside the loss)."""
    bad = y[(y < 0) | (y >= classes)]
    if bad.size:
        raise ValueError(f"{path}: labels must lie in 0..{classes - 1}, found {int(bad[0])} "
                         f"({bad.size} of {y.size} labels outside)")


_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
              0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one IDX file (the MNIST format), gzip-compressed or not.

    Layout: two zero bytes, a type code (``0x08`` = uint8, ...), the number of dimensions
    ``n``, ``n`` big-endian int32 sizes, then the data in C order.

    Example
    -------
    >>> import os, tempfile, numpy as np
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     p = os.path.join(tmp, "x.idx")
    ...     with open(p, "wb") as fh:
    ...         _ = fh.write(bytes([0, 0, 8, 1]) + (3).to_bytes(4, "big") + bytes([7, 8, 9]))
    ...     read_idx(p).tolist()
    [7, 8, 9]
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError, zlib.error) as exc:  # zlib.error: a damaged deflate stream in a .gz
        raise ValueError(f"cannot read IDX file {path}: {exc}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise ValueError(f"{path} is not an IDX file (bad magic number)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path} is truncated (header of {ndim} dimensions)")
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_TYPES[raw[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise ValueError(f"{path}: header says shape {shape} ({expected} bytes of data), "
                         f"file holds {len(raw) - header}")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def load_fashion_mnist(root: str | os.PathLike = FASHION_MNIST_ROOT) -> ImageSet:
    """Read Fashion-MNIST from its four IDX files, images zero-padded from 28×28 to 32×32.

    Expects ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``
    and ``t10k-labels-idx1-ubyte`` in ``root``, each optionally ``.gz`` (Debian's
    ``dataset-fashion-mnist`` installs the ``.gz`` files in ``/usr/share/datasets/fashion-mnist``).

    Returns
    -------
    ImageSet with images ``(N, 1, 32, 32)`` and 10 classes.

    Example
    -------
    >>> load_fashion_mnist("/nonexistent")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    FileNotFoundError: Fashion-MNIST not found in /nonexistent: ...
    """
    root = Path(root)
    files = {}
    for key in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        found = [root / (key + ext) for ext in (".gz", "") if (root / (key + ext)).is_file()]
        if not found:
            raise FileNotFoundError(
                f"Fashion-MNIST not found in {root}: missing {key}.gz (or {key}); install Debian's "
                f"dataset-fashion-mnist package (files in {FASHION_MNIST_ROOT}) or set data.root")
        files[key] = found[0]
    arrays = {k: read_idx(p) for k, p in files.items()}
    out = []
    for split in ("train", "t10k"):
        x, y = arrays[f"{split}-images-idx3-ubyte"], arrays[f"{split}-labels-idx1-ubyte"]
        if x.ndim != 3 or x.dtype != np.uint8 or y.ndim != 1 or x.shape[0] != y.shape[0]:
            raise ValueError(f"Fashion-MNIST {split} files in {root} have inconsistent shapes "
                             f"{x.shape} and {y.shape}")
        _check_labels(y, 10, files[f"{split}-labels-idx1-ubyte"])
        pad_h, pad_w = 32 - x.shape[1], 32 - x.shape[2]
        if pad_h < 0 or pad_w < 0:
            raise ValueError(f"Fashion-MNIST images must be at most 32×32, got {x.shape[1:]}")
        x = np.pad(x, ((0, 0), (pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2)))
        out += [np.ascontiguousarray(x[:, None]), y.astype(np.int64)]
    return ImageSet(out[0], out[1], out[2], out[3], 10, "fashion_mnist")


def synthetic_images(n_train: int = 2048, n_test: int = 512, classes: int = 10, channels: int = 3,
                     size: int = 32, seed: int = 0) -> ImageSet:
    r"""A learnable random image set: class prototypes plus noise, as uint8.

    Each class ``c`` has a smooth random prototype ``P_c``; an image of class ``c`` is
    ``clip(128 + 48·P_c + 24·ε)`` with ``ε ~ N(0, I)``, labels uniform over classes.

    Example
    -------
    >>> s = synthetic_images(8, 4, classes=3, channels=1, size=8)
    >>> s.train_x.shape, s.train_x.dtype.name, s.classes
    ((8, 1, 8, 8), 'uint8', 3)
    """
    for name, v in (("n_train", n_train), ("n_test", n_test), ("classes", classes),
                    ("channels", channels), ("size", size)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 7]))
    coarse = rng.standard_normal((classes, channels, 4, 4))
    protos = np.kron(coarse, np.ones((1, 1, -(-size // 4), -(-size // 4))))[:, :, :size, :size]

    def draw(n):
        y = rng.integers(0, classes, n)
        x = 128.0 + 48.0 * protos[y] + 24.0 * rng.standard_normal((n, channels, size, size))
        return np.clip(np.rint(x), 0, 255).astype(np.uint8), y.astype(np.int64)

    tx, ty = draw(n_train)
    vx, vy = draw(n_test)
    return ImageSet(tx, ty, vx, vy, classes, "synthetic")


def load_images(dataset: str, root: str = "", **synthetic) -> ImageSet:
    """Load ``dataset`` (one of :data:`DATASETS`); ``root`` ``""`` means its standard place.

    Example
    -------
    >>> load_images("synthetic", n_train=4, n_test=2, size=8).train_x.shape
    (4, 3, 8, 8)
    """
    if dataset == "synthetic":
        return synthetic_images(**synthetic)
    if dataset == "fashion_mnist":
        return load_fashion_mnist(root or FASHION_MNIST_ROOT)
    if dataset == "cifar10":
        return load_cifar10(root or CIFAR10_ROOT)
    raise ValueError(f"unknown dataset {dataset!r}; known: {', '.join(DATASETS)}")


# ----------------------------------------------------------------------------------- splits
def client_parts(labels, clients: int, method: str = "iid", *, alpha: float = 0.5,
                 shards_per_client: int = 2, seed: int = 0) -> list[np.ndarray]:
    """Indices of the training rows of each of ``M`` clients (every row to exactly one client).

    Same methods and semantics as :func:`savic_theory.problems.data.split_clients` (iid,
    Dirichlet(α) label proportions, label-sorted shards), which does the work.

    Returns
    -------
    list of M sorted int64 arrays

    Example
    -------
    >>> import numpy as np
    >>> parts = client_parts(np.repeat([0, 1], 4), 2, "shards", shards_per_client=1)
    >>> [p.tolist() for p in parts] in ([[0, 1, 2, 3], [4, 5, 6, 7]], [[4, 5, 6, 7], [0, 1, 2, 3]])
    True
    """
    labels = np.asarray(labels)
    rows = np.arange(labels.shape[0], dtype=np.float64)[:, None]
    parts, _ = split_clients(rows, labels, clients, method, alpha=alpha,
                             shards_per_client=shards_per_client, seed=seed)
    return [np.sort(p[:, 0].astype(np.int64)) for p in parts]


# ----------------------------------------------------------------------------------- device side
def augment(x: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor, pad: int) -> torch.Tensor:
    """Random crop with zero padding and horizontal flip, as one gather on the device.

    ``out[i] = flip_i(pad(x_i)[:, o_i0 : o_i0 + H, o_i1 : o_i1 + W])``.

    Parameters
    ----------
    x : tensor (n, C, H, W), any dtype
    offsets : int64 tensor (n, 2), values in ``[0, 2·pad]``
    flips : bool tensor (n,)
    pad : int

    Example
    -------
    >>> import torch
    >>> x = torch.arange(4.0).view(1, 1, 2, 2)
    >>> augment(x, torch.tensor([[1, 1]]), torch.tensor([True]), 1)[0, 0].tolist()
    [[1.0, 0.0], [3.0, 2.0]]
    """
    n, c, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    dev = x.device
    rows = offsets[:, 0, None] + torch.arange(h, device=dev)
    cols = offsets[:, 1, None] + torch.arange(w, device=dev)
    cols = torch.where(flips[:, None], cols.flip(-1), cols)
    return padded[torch.arange(n, device=dev)[:, None, None, None], torch.arange(c, device=dev)[None, :, None, None],
                  rows[:, None, :, None], cols[:, None, None, :]]


def _channel_stats(x: np.ndarray, chunk: int = 8192) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation of uint8 images ``(N, C, ...)`` scaled to [0, 1],
    summed in float64 over chunks of rows (no float64 copy of the whole set)."""
    axes = (0,) + tuple(range(2, x.ndim))
    total = np.zeros(x.shape[1])
    squares = np.zeros(x.shape[1])
    for start in range(0, x.shape[0], chunk):
        block = x[start:start + chunk].astype(np.float64) / 255.0
        total += block.sum(axis=axes)
        squares += (block * block).sum(axis=axes)
    count = x.size / x.shape[1]
    mean = total / count
    return mean, np.sqrt(np.maximum(squares / count - mean * mean, 0.0))


class DeviceData:
    """Training and test data on one device, split over clients, with per-client minibatches.

    ``uint8`` images are augmented (optional) and normalized per channel with the training
    set's mean and standard deviation on the device; float features (e.g. a regression design
    matrix in tests) are used as they are.

    Parameters
    ----------
    train_x, train_y : arrays (N, ...) and (N,)
    parts : list of M int arrays
        Training rows of each client (:func:`client_parts`).
    test_x, test_y : arrays, optional
    device : torch.device or str
    augment : bool
        Random crop (padding ``pad``) and horizontal flip of training images.
    pad : int
    train_eval_size : int
        Size of the fixed random subset of training rows on which :meth:`train_eval_batches`
        measures ``f(x̄)`` (0: none).
    seed : int
        Seed of that subset.

    Example
    -------
    >>> import numpy as np, torch
    >>> s = synthetic_images(16, 8, classes=2, size=8)
    >>> data = DeviceData(s.train_x, s.train_y, client_parts(s.train_y, 2), s.test_x, s.test_y)
    >>> gens = [torch.Generator().manual_seed(m) for m in range(2)]
    >>> x, y = data.client_batch(range(2), gens, 3)
    >>> tuple(x.shape), tuple(y.shape)
    ((2, 3, 3, 8, 8), (2, 3))
    """

    def __init__(self, train_x, train_y, parts, test_x=None, test_y=None, *, device="cpu",
                 augment: bool = False, pad: int = 4, train_eval_size: int = 0, seed: int = 0):
        self.device = torch.device(device)
        self.train_x = torch.as_tensor(np.ascontiguousarray(train_x), device=self.device)
        self.train_y = torch.as_tensor(np.ascontiguousarray(train_y), device=self.device)
        if self.train_x.shape[0] != self.train_y.shape[0]:
            raise ValueError(f"train_x has {self.train_x.shape[0]} rows but train_y has {self.train_y.shape[0]}")
        self.images = self.train_x.dtype == torch.uint8
        if augment and not (self.images and self.train_x.ndim == 4):
            raise ValueError("augment=True needs uint8 images of shape (N, C, H, W)")
        self.augment, self.pad = bool(augment), int(pad)
        n = self.train_x.shape[0]
        parts = [np.asarray(p, dtype=np.int64) for p in parts]
        if not parts or any(p.size == 0 for p in parts):
            raise ValueError("parts must give every client at least one training row")
        if any(p.min() < 0 or p.max() >= n for p in parts):
            raise ValueError(f"parts hold row indices outside [0, {n})")
        self.parts = [torch.as_tensor(p, device=self.device) for p in parts]
        self.sizes = [int(p.size) for p in parts]
        if self.images:
            mean, std = _channel_stats(np.asarray(train_x))
            shape = (1, -1) + (1,) * (self.train_x.ndim - 2)
            self.mean = torch.as_tensor(mean, dtype=torch.float32, device=self.device).view(shape)
            self.std = torch.as_tensor(np.maximum(std, 1e-8), dtype=torch.float32, device=self.device).view(shape)
        self.test_x = None if test_x is None else torch.as_tensor(np.ascontiguousarray(test_x), device=self.device)
        self.test_y = None if test_y is None else torch.as_tensor(np.ascontiguousarray(test_y), device=self.device)
        if train_eval_size < 0:
            raise ValueError(f"train_eval_size must be >= 0, got {train_eval_size}")
        rows = np.random.default_rng(np.random.SeedSequence([int(seed), 11])).permutation(n)[:train_eval_size]
        self.train_eval_rows = torch.as_tensor(np.sort(rows), device=self.device)

    @property
    def n_clients(self) -> int:
        return len(self.parts)

    def normalize(self, x: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
        """``(x/255 − mean)/std`` for uint8 images; float features are cast only."""
        if not self.images:
            return x.to(dtype)
        return ((x.to(torch.float32) / 255.0 - self.mean) / self.std).to(dtype)

    def client_batch(self, clients, generators, batch_size: int, dtype=torch.float32):
        """One minibatch per client, stacked: ``x (m, b, ...)``, ``y (m, b)``.

        Client ``clients[i]`` draws, from ``generators[i]`` and in this order, ``b`` row indices
        uniformly with replacement from its rows, then (with augmentation) ``b`` crop offsets
        and ``b`` flips. ``batch_size = 0`` takes all of each client's rows in order, the exact
        ``f_m`` (the clients must then hold equally many, and the data must not be augmented).
        """
        if batch_size == 0 and self.augment:
            raise ValueError("batch_size = 0 (each client's full data, unaugmented) needs augment=False")
        idx, offs, flips = [], [], []
        for m, gen in zip(clients, generators):
            part = self.parts[m]
            if batch_size == 0:
                idx.append(part)
                continue
            idx.append(part[torch.randint(part.numel(), (batch_size,), generator=gen, device=self.device)])
            if self.augment:
                offs.append(torch.randint(2 * self.pad + 1, (batch_size, 2), generator=gen, device=self.device))
                flips.append(torch.randint(2, (batch_size,), generator=gen, device=self.device).bool())
        if batch_size == 0 and len({int(i.numel()) for i in idx}) > 1:
            raise ValueError("batch_size = 0 (full batches) needs clients with equally many rows, got "
                             f"{[int(i.numel()) for i in idx]}")
        rows = torch.cat(idx)
        x = self.train_x[rows]
        if self.augment:
            x = augment(x, torch.cat(offs), torch.cat(flips), self.pad)
        m = len(idx)
        x = self.normalize(x, dtype)
        return x.view(m, -1, *x.shape[1:]), self.train_y[rows].view(m, -1)

    def _batches(self, x, y, rows, batch: int, rank: int, world: int, dtype):
        # the set is cut into the same batches whatever the number of processes, and process r
        # takes batches r, r + world, ...: with BatchNorm, which normalises a batch by its own
        # statistics, every image is then evaluated in the same batch on 1 or on W processes
        n = int(rows.numel()) if rows is not None else int(x.shape[0])
        for start in range(rank * batch, n, world * batch):
            sel = slice(start, min(start + batch, n))
            r = rows[sel] if rows is not None else None
            xb = x[r] if r is not None else x[sel]
            yb = y[r] if r is not None else y[sel]
            yield self.normalize(xb, dtype), yb

    def test_batches(self, batch: int, rank: int = 0, world: int = 1, dtype=torch.float32):
        """Normalized test batches of this process's share: batches ``rank, rank + world, ...`` of
        the set cut into batches of ``batch`` images (the same batches for any ``world``)."""
        if self.test_x is None:
            return iter(())
        return self._batches(self.test_x, self.test_y, None, batch, rank, world, dtype)

    def train_eval_batches(self, batch: int, rank: int = 0, world: int = 1, dtype=torch.float32):
        """Batches of the fixed training subset (no augmentation), this process's share."""
        return self._batches(self.train_x, self.train_y, self.train_eval_rows, batch, rank, world, dtype)
