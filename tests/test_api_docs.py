"""Every public name is documented, and docstring examples run (scipy-style doctests)."""
from __future__ import annotations

import doctest
import importlib
import importlib.util
import inspect
from pathlib import Path

import pytest

MODULES = ["savic_theory", "savic_theory.rules", "savic_theory.problems", "savic_theory.simulator",
           "savic_theory.config", "savic_theory.experiment", "savic_theory.theory", "savic_theory.verify",
           "savic_theory.plotting"]
API_PAGE = Path(__file__).resolve().parent.parent / "docs" / "api.md"


def public_names(modules=MODULES):
    for modname in modules:
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


def _members(cls):
    """Public methods and properties defined on ``cls`` itself (not inherited, not dunder)."""
    for name, value in vars(cls).items():
        if name.startswith("_"):
            continue
        if isinstance(value, property) or inspect.isfunction(value) or isinstance(value, (classmethod, staticmethod)):
            yield name, value


@pytest.mark.parametrize("qualname,obj", [(q, o) for q, o in public_names() if inspect.isclass(o)],
                         ids=lambda v: v if isinstance(v, str) else "")
def test_public_methods_have_docstrings(qualname, obj):
    missing = [name for name, value in _members(obj)
               if not (value.__doc__ if isinstance(value, property) else inspect.getdoc(getattr(obj, name)))]
    assert not missing, f"{qualname}: undocumented {', '.join(missing)}"


def test_api_page_lists_every_public_name():
    """docs/api.md names every entry of each public module's ``__all__`` (as `name` or `name(...)`)."""
    text = API_PAGE.read_text()
    mods = MODULES + (["savic_theory.nn"] if importlib.util.find_spec("torch") else [])
    missing = [f"{m}.{n}" for m in mods for n in importlib.import_module(m).__all__
               if n != "__version__" and f"`{n}" not in text and f".{n}`" not in text and f".{n}(" not in text]
    assert not missing, f"docs/api.md does not mention: {', '.join(missing)}"


@pytest.mark.parametrize("modname", ["savic_theory.rules.identity", "savic_theory.rules.rmsprop",
                                     "savic_theory.rules.adam", "savic_theory.rules.oasis",
                                     "savic_theory.problems.quadratic", "savic_theory.problems.logistic",
                                     "savic_theory.problems.data", "savic_theory.simulator.engine"])
def test_docstring_examples_run(modname):
    mod = importlib.import_module(modname)
    failures, tried = doctest.testmod(mod, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert tried > 0 and failures == 0


def test_cli_reference_is_current():
    from savic_theory.cli._docs import render

    doc = Path(__file__).resolve().parent.parent / "docs" / "cli.md"
    assert doc.read_text() == render(), "regenerate: python -m savic_theory.cli._docs > docs/cli.md"


def test_api_page_names_resolve_in_their_module():
    """Every name in a row of docs/api.md is importable from the module that row gives (a reader
    copies ``from <module> import <name>``); ``rules.identity`` in the row of ``savic_theory.rules``
    means that module's ``identity``, ``Quadratic.random`` an attribute of ``Quadratic``."""
    import re

    unresolved = []
    for line in API_PAGE.read_text().splitlines():
        cols = [c.strip() for c in line.split("|")]
        if len(cols) < 4 or not cols[2].startswith("`savic_theory"):
            continue
        modname = cols[2].strip("`")
        if modname.startswith("savic_theory.nn") and importlib.util.find_spec("torch") is None:
            continue
        mod = importlib.import_module(modname)
        for name in re.findall(r"`([A-Za-z_][\w.]*)", cols[1]):
            parts = name.split(".")
            if len(parts) > 1 and parts[0] == modname.rsplit(".", 1)[-1] and not hasattr(mod, parts[0]):
                parts = parts[1:]  # `config.resolve` in the row of savic_theory.config
            obj = mod
            for part in parts:
                obj = getattr(obj, part, None)
            if obj is None:
                unresolved.append(f"{name} (row of {modname})")
    assert not unresolved, "docs/api.md names what its module lacks: " + ", ".join(unresolved)
