"""SAVIC's theory in SymPy: assumptions, lemmas and derived theorems in read-only registries.

``THEOREMS`` and ``LEMMAS`` are the single tables used by the verification, the CLI, the tests
and ``docs/theory.md``; ``RULE_BOUNDS`` holds each scaling rule's ``α``, ``Γ`` and drift bound.

Example
-------
>>> from savic_theory.theory import THEOREMS, LEMMAS
>>> sorted(THEOREMS)[:2]
['beta_condition[heterogeneous]', 'beta_condition[identical]']
>>> "one_step" in LEMMAS
True
"""
from . import symbols
from .lemmas import LEMMAS, RULE_BOUNDS, Lemma, RuleBounds, drift_factors
from .theorems import THEOREMS, ComplexityTheorem, Theorem, evaluate, noise_floor

__all__ = ["symbols", "THEOREMS", "LEMMAS", "RULE_BOUNDS", "Theorem", "ComplexityTheorem", "Lemma",
           "RuleBounds", "drift_factors", "evaluate", "noise_floor"]
