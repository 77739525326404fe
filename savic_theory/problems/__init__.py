"""Problems with exact constants: quadratics and logistic regression."""
from ._base import Constants, Oracle, Problem
from .quadratic import Quadratic

__all__ = ["Problem", "Oracle", "Constants", "Quadratic"]
