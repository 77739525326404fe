"""Binary classification data for logistic regression, and its split over clients.

Two sources, both returning ``(X, y)`` with ``X`` a dense float64 array ``(n, d)`` and labels
``y ∈ {−1, +1}`` of shape ``(n,)``:

* :func:`load_dataset`: data sets bundled with scikit-learn (no download);
* :func:`load_libsvm`: any two-class file in LIBSVM/svmlight format.

:func:`split_clients` distributes the rows over ``M`` clients: uniformly at random (``"iid"``),
with Dirichlet(α) label proportions (``"dirichlet"``), or as label-sorted shards (``"shards"``).
scikit-learn (the ``data`` extra) is imported only when a loader is called.
"""
from __future__ import annotations

import os
from typing import Callable, NamedTuple

import numpy as np

from .._validation import check_bool, check_int, check_positive
from ._base import as_generator, as_real_array

__all__ = ["DATASETS", "SPLITS", "load_dataset", "load_libsvm", "load_data", "binary_labels",
           "split_clients"]


class _Bundled(NamedTuple):
    loader: str  # name of the function in sklearn.datasets
    positive: Callable[[np.ndarray], np.ndarray]  # target -> bool mask of the +1 class
    description: str


#: scikit-learn's bundled data sets usable as binary problems: name -> how the labels are made
DATASETS: dict[str, _Bundled] = {
    "breast_cancer": _Bundled("load_breast_cancer", lambda t: t == 1,
                              "569 tumours x 30 features; +1 = benign, -1 = malignant"),
    "digits": _Bundled("load_digits", lambda t: t >= 5,
                       "1797 8x8 images x 64 pixels; +1 = digit >= 5, -1 = digit < 5"),
}

#: ways to distribute rows over clients, see :func:`split_clients`
SPLITS = ("iid", "dirichlet", "shards")

#: largest dense ``n × d`` feature array :func:`load_libsvm` builds (2 GiB of float64): a
#: larger one is refused with a ValueError before it is allocated (e.g. a stray huge index)
MAX_DENSE_ENTRIES = 2**28


def _sklearn():
    try:
        import sklearn.datasets
        import sklearn.preprocessing
    except ImportError as exc:  # pragma: no cover - the data extra is part of the test extra
        raise ImportError("loading data sets needs scikit-learn: pip install 'savic-theory[data]'") from exc
    return sklearn


def load_dataset(name: str, standardize: bool = True) -> tuple[np.ndarray, np.ndarray]:
    r"""Load a binary classification data set bundled with scikit-learn.

    Each feature is standardised, ``x_{ij} ← (x_{ij} − mean_j) / std_j`` over all rows (a
    constant feature becomes 0); no intercept column is added. The labelling of each set is in
    :data:`DATASETS`.

    Parameters
    ----------
    name : {"breast_cancer", "digits"}
    standardize : bool
        Standardise the features (default) or return them as stored.

    Returns
    -------
    X : array (n, d) float64
    y : array (n,) float64 with values in {−1, +1}

    Example
    -------
    >>> from savic_theory.problems.data import load_dataset
    >>> X, y = load_dataset("breast_cancer")
    >>> X.shape, sorted(set(y.tolist()))
    ((569, 30), [-1.0, 1.0])
    """
    if not isinstance(name, str) or name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}")
    check_bool("standardize", standardize)
    entry = DATASETS[name]
    sk = _sklearn()
    bunch = getattr(sk.datasets, entry.loader)()
    X = np.asarray(bunch.data, dtype=np.float64)
    y = np.where(entry.positive(np.asarray(bunch.target)), 1.0, -1.0)
    if standardize:
        X = sk.preprocessing.StandardScaler().fit_transform(X)
    return X, y


def load_libsvm(path, standardize: bool = False, n_features: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    r"""Load a two-class LIBSVM/svmlight file as dense float64 features and ±1 labels.

    Any two distinct label values are accepted: the smaller becomes −1 and the larger +1
    (so ``{0, 1}``, ``{1, 2}`` and ``{−1, +1}`` all map as expected).

    Parameters
    ----------
    path : str or os.PathLike
        The file (``.bz2``/``.gz`` compressed files are read too).
    standardize : bool
        Standardise the features as in :func:`load_dataset` (off by default: LIBSVM sets are
        usually scaled already).
    n_features : int, optional
        Number of features, for files whose last columns are all zero.

    The dense array may hold at most :data:`MAX_DENSE_ENTRIES` entries (a ValueError names
    its shape otherwise).

    Returns
    -------
    X : array (n, d) float64
    y : array (n,) float64 with values in {−1, +1}

    Example
    -------
    >>> import os, tempfile
    >>> from savic_theory.problems.data import load_libsvm
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = os.path.join(tmp, "toy.svm")
    ...     with open(path, "w") as fh:
    ...         _ = fh.write("1 1:0.5 3:1\n0 2:2\n")
    ...     X, y = load_libsvm(path)
    >>> X.tolist(), y.tolist()
    ([[0.5, 0.0, 1.0], [0.0, 2.0, 0.0]], [1.0, -1.0])
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a file path, got {path!r}")
    path = os.fspath(path)
    check_bool("standardize", standardize)
    if n_features is not None:
        n_features = check_int("n_features", n_features, 1)
    if os.path.isdir(path):
        raise ValueError(f"LIBSVM path {path!r} is a directory, not a file")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"LIBSVM file {path!r} not found")
    sk = _sklearn()
    try:
        X, y = sk.datasets.load_svmlight_file(path, n_features=n_features, dtype=np.float64)
    except OverflowError as exc:  # a feature index beyond the index type
        raise ValueError(f"cannot read LIBSVM file {path!r}: a feature index is too large ({exc})") from exc
    except (ValueError, OSError, UnicodeDecodeError, EOFError) as exc:
        raise ValueError(f"cannot read LIBSVM file {path!r}: {exc}") from exc
    if X.shape[0] == 0:
        raise ValueError(f"LIBSVM file {path!r} holds no rows")
    if X.shape[0] * X.shape[1] > MAX_DENSE_ENTRIES:
        raise ValueError(f"LIBSVM file {path!r} would be a dense array of {X.shape[0]} rows x {X.shape[1]} "
                         f"features, more than MAX_DENSE_ENTRIES = {MAX_DENSE_ENTRIES} entries; check its "
                         "largest feature index")
    X = np.asarray(X.toarray(), dtype=np.float64)
    check_data(X, name=f"features of {path!r}")
    y = binary_labels(y, name=f"labels of {path!r}")
    if standardize:
        X = sk.preprocessing.StandardScaler().fit_transform(X)
    return X, y


def load_data(name_or_path, standardize: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Load a bundled data set by name, or a LIBSVM file by path.

    A name in :data:`DATASETS` loads that set (standardised unless ``standardize=False``);
    anything else that looks like a path (a ``PathLike``, or a string with a directory
    separator or a file extension, or an existing file) is read with :func:`load_libsvm`
    (not standardised unless ``standardize=True``).

    Example
    -------
    >>> from savic_theory.problems.data import load_data
    >>> load_data("digits")[0].shape
    (1797, 64)
    """
    if standardize is not None:
        check_bool("standardize", standardize)
    if isinstance(name_or_path, str) and name_or_path in DATASETS:
        return load_dataset(name_or_path, standardize=True if standardize is None else standardize)
    if isinstance(name_or_path, os.PathLike) or (isinstance(name_or_path, str) and (
            os.sep in name_or_path or "/" in name_or_path or os.path.splitext(name_or_path)[1]
            or os.path.exists(name_or_path))):
        return load_libsvm(name_or_path, standardize=False if standardize is None else standardize)
    raise ValueError(f"unknown dataset {name_or_path!r}; known datasets: {', '.join(DATASETS)}, "
                     "or give the path of a LIBSVM file")


def binary_labels(y, name: str = "y") -> np.ndarray:
    """Map a labelling with exactly two distinct values to ``{−1, +1}`` (smaller value → −1).

    Example
    -------
    >>> from savic_theory.problems.data import binary_labels
    >>> binary_labels([3, 7, 7, 3]).tolist()
    [-1.0, 1.0, 1.0, -1.0]
    """
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of labels, got shape {y.shape}")
    if y.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold numeric labels, got dtype {y.dtype}")
    check_data(y, name=name)
    values = np.unique(y)
    if values.size != 2:
        raise ValueError(f"{name} must have exactly two classes for logistic regression, "
                         f"got {values.size} distinct value(s): {values[:5].tolist()}")
    return np.where(y == values[1], 1.0, -1.0)


def check_data(arr: np.ndarray, name: str) -> None:
    """Raise a ValueError naming ``name`` when ``arr`` holds NaN or inf."""
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or inf")


def split_clients(X, y, n_clients: int, method: str = "iid", *, alpha: float = 0.5,
                  shards_per_client: int = 2, seed=0) -> tuple[list[np.ndarray], list[np.ndarray]]:
    r"""Distribute the rows of ``(X, y)`` over ``M`` clients; every row goes to exactly one client.

    * ``"iid"``: a random permutation cut into ``M`` parts of sizes ``⌊n/M⌋`` or ``⌈n/M⌉``.
    * ``"dirichlet"``: for each class ``c``, proportions ``p_c ~ Dir(α 1_M)`` and the class's
      rows (shuffled) go to client ``m`` in numbers ``~ Multinomial(n_c, p_c)``. Small ``α``
      gives each client few classes. A client left empty then receives one row, chosen at
      random, from the client that currently has the most rows (repeated until every client
      has a row; possible because ``n ≥ M``).
    * ``"shards"``: rows sorted by label (ties in random order) are cut into
      ``M · shards_per_client`` contiguous shards of near-equal size, and each client receives
      ``shards_per_client`` of them at random (McMahan et al., 2017).

    Parameters
    ----------
    X : array (n, d)
    y : array (n,)
    n_clients : int
        ``M``, at most ``n`` (at most ``n / shards_per_client`` for ``"shards"``).
    method : {"iid", "dirichlet", "shards"}
    alpha : float
        Dirichlet concentration ``α > 0`` (``"dirichlet"`` only).
    shards_per_client : int
        Shards per client (``"shards"`` only).
    seed : int or numpy.random.Generator

    Returns
    -------
    features : list of M arrays (n_m, d)
    labels : list of M arrays (n_m,)

    Example
    -------
    >>> import numpy as np
    >>> from savic_theory.problems.data import split_clients
    >>> X, y = np.arange(20.0).reshape(10, 2), np.repeat([-1.0, 1.0], 5)
    >>> Xs, ys = split_clients(X, y, 2, method="shards", shards_per_client=1)
    >>> sorted(yc.tolist() for yc in ys)
    [[-1.0, -1.0, -1.0, -1.0, -1.0], [1.0, 1.0, 1.0, 1.0, 1.0]]
    """
    X = as_real_array("X", X)
    y = np.asarray(y)
    if X.ndim != 2:
        raise ValueError(f"X must be a 2-D array (n, d), got shape {X.shape}")
    if y.ndim != 1 or y.shape[0] != X.shape[0]:
        raise ValueError(f"y must have shape ({X.shape[0]},) to match X, got {y.shape}")
    if y.dtype.kind in "fc":
        check_data(y, "y")
    n = X.shape[0]
    n_clients = check_int("n_clients", n_clients, 1)
    if n_clients > n:
        raise ValueError(f"n_clients = {n_clients} exceeds the number of rows n = {n}")
    if method not in SPLITS:
        raise ValueError(f"unknown split method {method!r}; known methods: {', '.join(SPLITS)}")
    rng = as_generator(seed)
    if method == "iid":
        parts = np.array_split(rng.permutation(n), n_clients)
    elif method == "dirichlet":
        parts = _dirichlet_parts(y, n_clients, _check_alpha(alpha), rng)
    else:
        shards_per_client = check_int("shards_per_client", shards_per_client, 1)
        n_shards = n_clients * shards_per_client
        if n_shards > n:
            raise ValueError(f"n_clients * shards_per_client = {n_shards} exceeds the number of rows n = {n}")
        order = np.lexsort((rng.random(n), y))  # by label, ties shuffled
        shards = np.array_split(order, n_shards)
        owner = rng.permutation(n_shards).reshape(n_clients, shards_per_client)
        parts = [np.concatenate([shards[s] for s in row]) for row in owner]
    return [X[p] for p in parts], [y[p] for p in parts]


def _dirichlet_parts(y, M, alpha, rng):
    n = y.shape[0]
    owner = np.empty(n, dtype=np.int64)
    for c in np.unique(y):
        rows = rng.permutation(np.flatnonzero(y == c))
        p = rng.dirichlet(np.full(M, alpha))
        owner[rows] = np.repeat(np.arange(M), rng.multinomial(rows.size, p / p.sum()))
    sizes = np.bincount(owner, minlength=M)
    for m in np.flatnonzero(sizes == 0):
        donor = int(np.argmax(sizes))  # has >= 2 rows: n >= M rows over fewer than M clients
        row = rng.choice(np.flatnonzero(owner == donor))
        owner[row] = m
        sizes[donor] -= 1
        sizes[m] += 1
    return [np.flatnonzero(owner == m) for m in range(M)]


def _check_alpha(alpha):
    return check_positive("alpha", alpha, "Dirichlet concentration")
