"""Scaling rules for SAVIC and their read-only registry.

``RULES`` maps a name to the constructor of a rule; it is the one table used by the
simulator, the CLI, the tests and the docs. Adding a rule costs one module and one line here.
"""
from __future__ import annotations

from types import MappingProxyType

from ._base import BetaSchedule, ScalingRule, Statistic, clip, state_type
from .adam import adam
from .identity import identity
from .oasis import oasis
from .per_run import per_run
from .rmsprop import rmsprop

RULES = MappingProxyType({
    "identity": identity,
    "rmsprop": rmsprop,
    "adam": adam,
    "oasis": oasis,
})


def as_rule(rule):
    """``rule`` as :func:`savic_theory.simulate` takes it: a registered name becomes that rule
    with its default ``beta`` and ``e``, a list (or tuple) of rules or names one rule over runs
    (:func:`per_run`); anything else is returned as it is, for the caller to check.

    Example
    -------
    >>> from savic_theory import rules
    >>> rules.as_rule(["adam", "rmsprop"]).run_names
    ('adam', 'rmsprop')
    """
    if isinstance(rule, str):
        return make(rule)
    if isinstance(rule, (list, tuple)) and not isinstance(rule, ScalingRule):
        return per_run(rule)
    return rule


def make(name: str, **params) -> ScalingRule:
    """Build the rule registered as ``name`` with keyword parameters (``beta``, ``e``)."""
    try:
        ctor = RULES[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown scaling rule {name!r}; known rules: {', '.join(RULES)}") from None
    if name == "identity" and params:
        unknown = ", ".join(sorted(params))
        raise TypeError(f"rule 'identity' takes no parameters, got: {unknown}")
    return ctor(**params)


__all__ = ["RULES", "make", "as_rule", "per_run", "ScalingRule", "BetaSchedule", "Statistic", "clip", "state_type",
           "identity", "rmsprop", "adam", "oasis"]
