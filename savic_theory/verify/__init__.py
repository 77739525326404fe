"""Verify SAVIC's theory against simulation: suites, lemma checks, reports, counterexample search.

``verify(suite)`` runs every case of a suite (one batched simulation each), checks its theorem
at every step and every lemma along the same trajectories, and returns a :class:`Report`
(JSON, Markdown, plots). ``adversarial(...)`` searches each rule's assumption class for the
instance that maximises observed/bound; ``exact_dist_sq`` (diagonal Hessians) and
``exact_dist_sq_dense`` give the exact expectation where D̂ does not depend on the noise. Given a :class:`~savic_theory.verify.resume.WorkArea`, both keep
each case and search as it finishes and reuse those already kept, so an interrupted run resumes
with the same numbers. ``savic verify`` is the command-line front end.

Example
-------
>>> from savic_theory.verify import verify
>>> report = verify("quick", progress=False)
>>> report.passed
True
"""
from __future__ import annotations

import time

from ..theory.lemmas import RULE_BOUNDS
from .adversarial import AdversarialResult, reproduce, search
from .checks import CaseResult, Check, run_case
from .exact import exact_dist_sq, exact_dist_sq_dense
from .report import Report
from .resume import WorkArea
from .suite import PROBLEMS, SUITES, Case, get_problem, select_cases

__all__ = ["verify", "adversarial", "Report", "Case", "CaseResult", "Check", "AdversarialResult",
           "SUITES", "PROBLEMS", "get_problem", "run_case", "search", "reproduce", "exact_dist_sq",
           "exact_dist_sq_dense"]


def verify(suite="default", *, level: float = 0.99, theorems=None, progress: bool = True,
           work: WorkArea | None = None) -> Report:
    """Run a suite and return its :class:`Report`.

    Parameters
    ----------
    suite : str or sequence of Case
        A key of ``SUITES`` or the cases themselves.
    level : float
        One-sided confidence level of the upper limits (Student-t quantiles with seeds − 1
        degrees of freedom, ``verify.stats.t_quantile``); when every
        bound holds, the suite's cases report some ``violated`` with probability at most
        ``1 − level`` (Bonferroni over its cases, tests and steps).
    theorems : sequence of str, optional
        Keep only the cases of these theorems.
    progress : bool
        Show a progress bar over the cases.
    work : WorkArea, optional
        Keep each case as it finishes and reuse the cases already there (``savic verify
        --resume``); the report's ``elapsed`` then counts the reused cases' own times.
    """
    t0 = time.perf_counter()
    name, cases = select_cases(suite, theorems)
    from ..cli._common import progress as _progress

    results = []
    reused_time = 0.0
    with _progress(len(cases), f"verify {name}", enabled=progress) as bar:
        for case in cases:
            bar.set_postfix_str(case.name, refresh=False)
            result = work.load_case(case) if work is not None else None
            if result is None:
                result = run_case(case, level=level, family=len(cases))
                if work is not None:
                    work.save_case(result)
            else:
                reused_time += result.elapsed
            results.append(result)
            bar.update(1)
    return Report(name, level, results, time.perf_counter() - t0 + reused_time)


def adversarial(rules=("identity", "rmsprop", "adam", "oasis"), theorems=("identical", "heterogeneous"), *,
                progress: bool = True, work: WorkArea | None = None, **search_kw) -> list[AdversarialResult]:
    """One :func:`search` per rule and theorem; keyword arguments go to :func:`search`.

    ``min_spread`` applies to the adaptive rules only: the identity rule keeps ``D̂ = I`` and is
    searched over every instance. With ``work``, each search is kept as it finishes and searches
    already there with the same keyword arguments are reused (``savic verify --resume``).
    """
    out = []
    for rule in rules:
        kw = dict(search_kw)
        if rule in RULE_BOUNDS and RULE_BOUNDS[rule].drift == 1:  # (search names an unknown rule)
            kw.pop("min_spread", None)
        for thm in theorems:
            found = work.load_search(rule, thm, kw) if work is not None else None
            if found is None:
                found = search(rule, thm, progress=progress, **kw)
                if work is not None:
                    work.save_search(found, kw)
            out.append(found)
    return out
