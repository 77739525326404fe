"""Verify SAVIC's theory against simulation: suites, lemma checks, reports, counterexample search.

``verify(suite)`` runs every case of a suite (one batched simulation each), checks its theorem
at every step and every lemma along the same trajectories, and returns a :class:`Report`
(JSON, Markdown, plots). ``adversarial(...)`` searches each rule's assumption class for the
instance that maximises observed/bound; ``exact_dist_sq`` gives the exact expectation where D̂
does not depend on the noise. ``savic verify`` is the command-line front end.

Example
-------
>>> from savic_theory.verify import verify
>>> report = verify("quick", progress=False)
>>> report.passed
True
"""
from __future__ import annotations

import time

from .adversarial import AdversarialResult, reproduce, search
from .checks import CaseResult, Check, run_case
from .exact import exact_dist_sq
from .report import Report
from .suite import PROBLEMS, SUITES, Case, get_problem

__all__ = ["verify", "adversarial", "Report", "Case", "CaseResult", "Check", "AdversarialResult",
           "SUITES", "PROBLEMS", "get_problem", "run_case", "search", "reproduce", "exact_dist_sq"]


def verify(suite="default", *, level: float = 0.99, theorems=None, progress: bool = True) -> Report:
    """Run a suite and return its :class:`Report`.

    Parameters
    ----------
    suite : str or sequence of Case
        A key of ``SUITES`` or the cases themselves.
    level : float
        One-sided confidence level of the upper limits (``z`` = its normal quantile).
    theorems : sequence of str, optional
        Keep only the cases of these theorems.
    progress : bool
        Show a progress bar over the cases.
    """
    t0 = time.perf_counter()
    if isinstance(suite, str):
        if suite not in SUITES:
            raise ValueError(f"unknown suite {suite!r}; known suites: {', '.join(SUITES)}")
        name, cases = suite, SUITES[suite]
    else:
        name, cases = "custom", tuple(suite)
        if not all(isinstance(c, Case) for c in cases):
            raise TypeError("suite must be a suite name or a sequence of savic_theory.verify.Case")
    if theorems:
        from ..theory import THEOREMS

        unknown = sorted(set(theorems) - set(THEOREMS))
        if unknown:
            raise ValueError(f"unknown theorem(s) {', '.join(unknown)}; known: {', '.join(THEOREMS)}")
        cases = tuple(c for c in cases if c.theorem in set(theorems))
    from ..cli._common import progress as _progress

    results = []
    with _progress(len(cases), f"verify {name}", enabled=progress) as bar:
        for case in cases:
            bar.set_postfix_str(case.name, refresh=False)
            results.append(run_case(case, level=level))
            bar.update(1)
    return Report(name, level, results, time.perf_counter() - t0)


def adversarial(rules=("identity", "rmsprop", "adam", "oasis"), theorems=("identical", "heterogeneous"), *,
                progress: bool = True, **search_kw) -> list[AdversarialResult]:
    """One :func:`search` per rule and theorem; keyword arguments go to :func:`search`."""
    out = []
    for rule in rules:
        for thm in theorems:
            out.append(search(rule, thm, progress=progress, **search_kw))
    return out
