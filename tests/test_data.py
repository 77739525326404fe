"""Data for logistic regression: bundled sets, LIBSVM files, and splits over clients."""
from __future__ import annotations

import numpy as np
import pytest

from savic_theory.problems import data as data_module
from savic_theory.problems.data import (DATASETS, SPLITS, binary_labels, load_data, load_dataset,
                                        load_libsvm, split_clients)
from savic_theory.problems.logistic import Logistic

pytest.importorskip("sklearn")


def write(path, text):
    path.write_text(text)
    return path


@pytest.fixture
def toy_libsvm(tmp_path):
    """Five rows, three features (the third only in one row), labels {0, 1}."""
    return write(tmp_path / "toy.svm", "1 1:0.5 2:-1\n0 2:2\n1 1:1 3:4\n0 1:-0.5\n1 2:0.25\n")


# ------------------------------------------------------------------ bundled data sets
@pytest.mark.parametrize("name,shape", [("breast_cancer", (569, 30)), ("digits", (1797, 64))])
def test_load_dataset_shapes_labels_and_standardisation(name, shape):
    X, y = load_dataset(name)
    assert X.shape == shape and y.shape == (shape[0],) and X.dtype == np.float64
    assert set(np.unique(y)) == {-1.0, 1.0}
    np.testing.assert_allclose(X.mean(axis=0), 0.0, atol=1e-12)
    std = X.std(axis=0)
    assert np.all((np.abs(std - 1.0) < 1e-12) | (std == 0.0))  # constant pixels of digits stay 0
    raw, y_raw = load_dataset(name, standardize=False)
    assert np.array_equal(y, y_raw) and not np.allclose(raw, X)


def test_digits_labels_split_at_five():
    from sklearn.datasets import load_digits

    _, y = load_dataset("digits")
    np.testing.assert_array_equal(y, np.where(load_digits().target >= 5, 1.0, -1.0))
    assert set(DATASETS) >= {"breast_cancer", "digits"}


def test_unknown_dataset_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown dataset 'mnist'.*breast_cancer"):
        load_dataset("mnist")
    with pytest.raises(ValueError, match="unknown dataset 'mnist'"):
        load_data("mnist")


# ------------------------------------------------------------------ LIBSVM files
def test_load_libsvm_dense_and_labels_mapped(toy_libsvm):
    X, y = load_libsvm(toy_libsvm)
    expected = np.array([[0.5, -1, 0], [0, 2, 0], [1, 0, 4], [-0.5, 0, 0], [0, 0.25, 0]])
    np.testing.assert_array_equal(X, expected)
    np.testing.assert_array_equal(y, [1, -1, 1, -1, 1])
    assert isinstance(X, np.ndarray) and X.dtype == np.float64
    X4, _ = load_libsvm(toy_libsvm, n_features=4)
    assert X4.shape == (5, 4)


@pytest.mark.parametrize("labels,expected", [(("2", "1"), [1, -1]), (("+1", "-1"), [1, -1]),
                                             (("-1", "3"), [-1, 1])])
def test_load_libsvm_any_two_class_labelling(tmp_path, labels, expected):
    path = write(tmp_path / "two.txt", f"{labels[0]} 1:1\n{labels[1]} 1:2\n")
    np.testing.assert_array_equal(load_libsvm(path)[1], expected)


def test_load_libsvm_errors_name_the_file(tmp_path):
    missing = tmp_path / "absent.svm"
    with pytest.raises(FileNotFoundError, match="absent.svm"):
        load_libsvm(missing)
    three = write(tmp_path / "three.svm", "0 1:1\n1 1:2\n2 1:3\n")
    with pytest.raises(ValueError, match="labels of .*three.svm.* exactly two classes"):
        load_libsvm(three)
    garbage = write(tmp_path / "garbage.svm", "this is not : a libsvm file\n")
    with pytest.raises(ValueError, match="cannot read LIBSVM file .*garbage.svm"):
        load_libsvm(garbage)
    with pytest.raises(TypeError, match="path"):
        load_libsvm(3)


def test_load_libsvm_rejects_nan(tmp_path):
    path = write(tmp_path / "nan.svm", "1 1:nan\n0 1:1\n")
    with pytest.raises(ValueError, match="nan.svm.*NaN or inf"):
        load_libsvm(path)


def test_load_libsvm_huge_feature_index_is_a_clear_error(tmp_path, monkeypatch):
    """A stray huge index must not reach NumPy: beyond the index type it was an OverflowError,
    below it a dense (n, index) array of any size was allocated."""
    beyond = write(tmp_path / "beyond.svm", "1 1:1\n-1 3000000000:2\n")
    with pytest.raises(ValueError, match="beyond.svm.*feature index is too large"):
        load_libsvm(beyond)
    monkeypatch.setattr(data_module, "MAX_DENSE_ENTRIES", 1000, raising=False)
    wide = write(tmp_path / "wide.svm", "1 1:1\n-1 5000:2\n")
    with pytest.raises(ValueError, match=r"wide.svm.*2 rows x 5000 features.*MAX_DENSE_ENTRIES"):
        load_libsvm(wide)
    assert load_libsvm(write(tmp_path / "narrow.svm", "1 1:1\n-1 500:2\n"))[0].shape == (2, 500)


@pytest.mark.parametrize("n_features,err", [(0, ValueError), (-1, ValueError), ("3", TypeError), (3.0, TypeError)])
def test_load_libsvm_bad_n_features_is_named(toy_libsvm, n_features, err):
    with pytest.raises(err, match="n_features must be"):
        load_libsvm(toy_libsvm, n_features=n_features)


def test_load_libsvm_directory_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="is a directory"):
        load_libsvm(tmp_path)


def test_load_data_dispatches_on_name_or_path(toy_libsvm):
    X, _ = load_data(toy_libsvm)
    np.testing.assert_array_equal(X, load_libsvm(toy_libsvm)[0])
    assert load_data(str(toy_libsvm))[0].shape == (5, 3)
    assert load_data("breast_cancer")[0].shape == (569, 30)


def test_logistic_from_dataset_with_libsvm_path(toy_libsvm):
    prob = Logistic.from_dataset(toy_libsvm, n_clients=2, split="iid", lam=0.1, batch_size=2)
    assert prob.n_clients == 2 and prob.dim == 3 and int(prob.counts.sum()) == 5
    assert np.linalg.norm(prob.full_grad(prob.x_star).mean(axis=0)) <= 1e-12


@pytest.mark.parametrize("name", ["breast_cancer", "digits"])
def test_logistic_from_bundled_dataset_heterogeneous_split(name):
    prob = Logistic.from_dataset(name, n_clients=5, split="dirichlet", alpha=0.1, lam=1e-3, seed=0)
    assert np.linalg.norm(prob.full_grad(prob.x_star).mean(axis=0)) <= 1e-12
    assert prob.zeta2 > 0 and prob.L > prob.mu == 1e-3


# ------------------------------------------------------------------ labels
def test_binary_labels():
    np.testing.assert_array_equal(binary_labels([0, 1, 1]), [-1, 1, 1])
    np.testing.assert_array_equal(binary_labels(np.array([-1.0, 1.0])), [-1, 1])
    with pytest.raises(ValueError, match="exactly two classes"):
        binary_labels([1, 2, 3])
    with pytest.raises(ValueError, match="exactly two classes"):
        binary_labels([1, 1])
    with pytest.raises(TypeError, match="numeric"):
        binary_labels(["a", "b"])
    with pytest.raises(ValueError, match="NaN"):
        binary_labels([0.0, np.nan, 1.0])


# ------------------------------------------------------------------ splits
def labelled(n=60, d=3, frac_pos=0.5, seed=0):
    """Rows whose first feature is the row id, so a split can be traced back."""
    rng = np.random.default_rng(seed)
    X = np.column_stack([np.arange(n, dtype=float), rng.standard_normal((n, d - 1))])
    y = np.where(np.arange(n) < frac_pos * n, 1.0, -1.0)
    rng.shuffle(y)
    return X, y


@pytest.mark.parametrize("method", SPLITS)
def test_split_is_a_partition(method):
    X, y = labelled()
    Xs, ys = split_clients(X, y, 7, method, alpha=0.3, shards_per_client=2, seed=1)
    assert len(Xs) == len(ys) == 7
    ids = np.concatenate([a[:, 0] for a in Xs]).astype(int)
    assert sorted(ids) == list(range(len(y)))  # every row exactly once
    for a, lab in zip(Xs, ys):
        assert a.shape[0] >= 1 and a.shape[0] == lab.shape[0]
        np.testing.assert_array_equal(lab, y[a[:, 0].astype(int)])  # rows keep their labels


def test_iid_split_sizes_are_balanced_and_seeded():
    X, y = labelled(n=61)
    Xs, _ = split_clients(X, y, 4, "iid", seed=3)
    assert sorted(len(a) for a in Xs) == [15, 15, 15, 16]
    again, _ = split_clients(X, y, 4, "iid", seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(Xs, again))
    other, _ = split_clients(X, y, 4, "iid", seed=4)
    assert not all(np.array_equal(a, b) for a, b in zip(Xs, other))


def test_dirichlet_with_small_alpha_is_skewed():
    """With α = 0.01 a client's rows come almost surely from one class; with α = 100 both
    classes are near their global share 1/2 on every client."""
    X, y = labelled(n=400)

    def majority(alpha):
        _, ys = split_clients(X, y, 8, "dirichlet", alpha=alpha, seed=0)
        return np.array([max(np.mean(lab == 1), np.mean(lab == -1)) for lab in ys])

    assert np.mean(majority(0.01)) > 0.95
    assert np.max(majority(100.0)) < 0.75


def test_dirichlet_gives_every_client_a_row():
    X, y = labelled(n=30)
    for seed in range(5):
        Xs, _ = split_clients(X, y, 30, "dirichlet", alpha=0.01, seed=seed)
        assert [len(a) for a in Xs] == [1] * 30


def test_shards_are_label_sorted():
    X, y = labelled(n=40)  # 20 rows of each class
    Xs, ys = split_clients(X, y, 4, "shards", shards_per_client=1, seed=2)
    # one shard of 10 rows each, cut from the label-sorted order: pure classes, two of each
    assert sorted(lab.tolist() for lab in ys) == [[-1.0] * 10] * 2 + [[1.0] * 10] * 2
    Xs, ys = split_clients(X, y, 5, "shards", shards_per_client=2, seed=2)
    for lab in ys:  # each of the two shards of 4 rows is sorted
        assert np.all(np.diff(lab[:4]) >= 0) and np.all(np.diff(lab[4:]) >= 0)


@pytest.mark.parametrize("kwargs,err,match", [
    (dict(n_clients=61), ValueError, "n_clients = 61 exceeds"),
    (dict(n_clients=0), ValueError, "n_clients"),
    (dict(n_clients=2.0), TypeError, "n_clients"),
    (dict(n_clients=2, method="random"), ValueError, "unknown split method 'random'"),
    (dict(n_clients=2, method="dirichlet", alpha=0.0), ValueError, "alpha"),
    (dict(n_clients=2, method="dirichlet", alpha="big"), TypeError, "alpha"),
    (dict(n_clients=31, method="shards", shards_per_client=2), ValueError, "shards_per_client = 62"),
    (dict(n_clients=2, method="shards", shards_per_client=0), ValueError, "shards_per_client"),
])
def test_split_errors_name_the_parameter(kwargs, err, match):
    X, y = labelled()
    with pytest.raises(err, match=match):
        split_clients(X, y, **kwargs)


def test_split_rejects_bad_arrays():
    X, y = labelled(n=10)
    bad = X.copy()
    bad[3, 1] = np.inf
    with pytest.raises(ValueError, match="X contains NaN or inf"):
        split_clients(bad, y, 2)
    with pytest.raises(ValueError, match="y must have shape"):
        split_clients(X, y[:-1], 2)
    with pytest.raises(ValueError, match="X must be a 2-D"):
        split_clients(X[:, 0], y, 2)
    with pytest.raises(ValueError, match="n_clients = 11 exceeds"):
        Logistic.from_arrays(X, y, n_clients=11)
    with pytest.raises(ValueError, match="unknown split method"):
        Logistic.from_arrays(X, y, n_clients=2, split="sorted")
    with pytest.raises(TypeError, match="X must be an array of real numbers"):
        split_clients(X.astype(str), y, 2)  # NumPy's own error named no argument
    with pytest.raises(TypeError, match="X must be an array of real numbers"):
        split_clients(X * (1 + 0j), y, 2)  # a cast would drop imaginary parts


@pytest.mark.parametrize("seed,err", [(-1, ValueError), ("abc", TypeError)])
def test_split_bad_seed_is_named(seed, err):
    X, y = labelled(n=10)
    with pytest.raises(err, match="seed must be"):
        split_clients(X, y, 2, seed=seed)


@pytest.mark.parametrize("flag", ["no", 0, None])
def test_standardize_must_be_a_bool(flag, tmp_path):
    """``standardize="no"`` used to count as true (and standardise)."""
    with pytest.raises(TypeError, match="standardize must be True or False"):
        load_dataset("breast_cancer", standardize=flag)
    path = tmp_path / "toy.svm"
    path.write_text("1 1:0.5\n-1 2:2\n")
    with pytest.raises(TypeError, match="standardize must be True or False"):
        load_libsvm(path, standardize=flag)
    if flag is not None:  # None is load_data's "the loader's default"
        with pytest.raises(TypeError, match="standardize must be True or False"):
            load_data(str(path), standardize=flag)
