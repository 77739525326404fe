"""Every public name is documented, and docstring examples run (scipy-style doctests)."""
from __future__ import annotations

import doctest
import importlib
import inspect

import pytest

MODULES = ["savic_theory", "savic_theory.rules", "savic_theory.problems", "savic_theory.simulator",
           "savic_theory.config", "savic_theory.experiment"]


def public_names():
    for modname in MODULES:
        mod = importlib.import_module(modname)
        for name in getattr(mod, "__all__", []):
            obj = getattr(mod, name)
            if inspect.ismodule(obj) or not (inspect.isclass(obj) or callable(obj)):
                continue
            yield f"{modname}.{name}", obj


@pytest.mark.parametrize("qualname,obj", list(public_names()), ids=lambda v: v if isinstance(v, str) else "")
def test_public_name_has_docstring(qualname, obj):
    doc = inspect.getdoc(obj)
    assert doc and len(doc.splitlines()[0]) > 10, f"{qualname} needs a one-line summary"


@pytest.mark.parametrize("modname", ["savic_theory.rules.identity", "savic_theory.rules.rmsprop",
                                     "savic_theory.rules.adam", "savic_theory.rules.oasis",
                                     "savic_theory.problems.quadratic", "savic_theory.problems.logistic",
                                     "savic_theory.problems.data", "savic_theory.simulator.engine"])
def test_docstring_examples_run(modname):
    mod = importlib.import_module(modname)
    failures, tried = doctest.testmod(mod, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert tried > 0 and failures == 0


def test_cli_reference_is_current():
    from pathlib import Path

    from savic_theory.cli._docs import render

    doc = Path(__file__).resolve().parent.parent / "docs" / "cli.md"
    assert doc.read_text() == render(), "regenerate: python -m savic_theory.cli._docs > docs/cli.md"
