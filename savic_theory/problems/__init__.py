"""Problems with exact constants: quadratics and logistic regression, and their data."""
from ._base import Constants, Oracle, Problem
from .data import load_dataset, load_libsvm, split_clients
from .logistic import Logistic
from .quadratic import Quadratic

__all__ = ["Problem", "Oracle", "Constants", "Quadratic", "Logistic", "load_dataset", "load_libsvm",
           "split_clients"]
