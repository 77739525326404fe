r"""Run one verification case and check its theorem and every lemma along the same trajectories.

For a :class:`~savic_theory.verify.suite.Case` this module makes one batched ``simulate`` call
(seeds × step sizes on the run axis, ``record_every=1``) and, per step size:

* **theorem**: the observed ``E‖x̄_t − x*‖²`` (mean over seeds, with the one-sided upper
  confidence limit ``mean + z·se``) against the bound at *every* step ``t``, with the
  theoretical constants (``α``, ``Γ``, ``δ_k`` from the lemmas). Verdict ``holds`` when the upper
  limit is at most the bound everywhere (relative slack ``RTOL`` for float64 round-off) and no
  run diverged; ``violated`` when some step shows a significant excess, ``mean − z_B·se >
  bound`` with the Bonferroni quantile ``z_B`` over the steps and the tests of the suite (see
  :func:`run_case`'s ``family``), or a run diverged; ``attained``
  otherwise: the bound is reached within sampling noise. Bounds of this kind are attained: at
  ``t = 1`` the decay factor ``1 − ρ`` of the bound meets the true ``(1 − ρ)²`` up to ``ρ``, and
  from ``x⁰ ≈ x*`` the noise accumulates exactly as the bound says while ``γμt ≪ 1``; there
  no finite sample can put the upper limit below the bound. Only ``violated`` fails. The bound
  with the *empirical* constants (``α̂``, ``Γ̂``, the largest drift seen at each sync) is
  reported next to it;
* **lemmas**, step by step: ``dhat_bounds`` (``α ≤ α̂``, ``Γ̂ ≤ Γ`` at every record and run),
  ``drift`` (drift at each sync ``≤ 1 + δ_k``), the consensus lemma of the theorem (``E V_t ≤``
  its right side, evaluated from the recorded ``f_gap`` and ``consensus`` through
  ``H̄ ≤ 2(f(x̄) − f*) + L V``), and the one-step lemma in the ``D̂``-norm, ``Φ_t`` being the
  recorded ``dist_sq_D``. Lemma inequalities in expectation are tested on per-run differences
  ``Z_t = LHS − RHS`` (linear in the runs). Some lemmas hold with *equality* in special cases
  (one step after a sync, the consensus error of an identical quadratic is exactly the bound),
  where no sample can put the upper confidence limit of ``E Z_t`` below 0; the same three
  verdicts as for the theorem apply to ``E Z_t ≤ 0``;
* **pooled tests**: every statistical check also tests the relative excess
  ``(LHS_t − RHS_t)/RHS_t`` averaged per run over groups of steps (:func:`pools`), in the same
  Bonferroni family as the steps; a small excess repeated over many rounds shows there;
* **local scaling** (when the case asks): the same runs with ``scaling="local"``, whose
  observed mean is reported against the global-scaling bound. There is no theorem for local
  scaling; nothing about it can fail.

Tightness is the largest ``observed mean / bound`` over the steps (``ratio``), over the second
half of the horizon (``ratio_late``; the first steps are trivially tight at ``t = 0`` when
``α = Γ``), and for the upper limit (``ratio_upper``).

Example
-------
>>> from savic_theory.verify.checks import run_case
>>> from savic_theory.verify.suite import Case
>>> res = run_case(Case("demo", "identical", "quad-identical", "identity", H=2, steps=60, seeds=16))
>>> res.status, res.groups[0].theorem.verdict
('pass', 'holds')
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import rules as _rules
from .._validation import check_int
from ..simulator import simulate
from ..theory import LEMMAS, RULE_BOUNDS, THEOREMS, drift_factors, evaluate
from .constants import problem_numbers, rule_alpha, rule_Gamma, update_betas
from .stats import mean_and_se, t_quantile, z_of
from .suite import Case, get_problem

__all__ = ["Check", "Series", "GroupResult", "CaseResult", "run_case", "bonferroni_z", "pools", "since_sync", "RTOL"]

#: relative slack for float64 round-off when an observed value meets a bound exactly (t = 0, α = Γ)
RTOL = 1e-9
#: the complexity theorem's plan is simulated only up to this many steps
MAX_PLANNED_STEPS = 20000


@dataclass
class Check:
    """One inequality checked along trajectories.

    ``passed``: no significant violation at any step nor in any pool of steps (None: not
    checked); ``strict``: the upper confidence limit is below the bound at every step and in
    every pool. ``verdict`` combines them: ``"holds"`` (strict), ``"attained"`` (passed, but the
    bound is reached within sampling noise somewhere), ``"violated"`` or ``"not checked"``.
    ``pooled`` and ``pooled_upper``: the largest mean relative excess ``E(LHS − RHS)/RHS`` over
    the pools of steps (see :func:`pools`) and its upper limit (NaN: no pooled test).
    """

    name: str
    passed: bool | None
    ratio: float = float("nan")
    ratio_upper: float = float("nan")
    ratio_late: float = float("nan")
    detail: str = ""
    strict: bool | None = None
    pooled: float = float("nan")
    pooled_upper: float = float("nan")

    @property
    def verdict(self) -> str:
        """``holds``, ``attained`` (within sampling noise), ``violated`` or ``not checked``."""
        if self.passed is None:
            return "not checked"
        if not self.passed:
            return "violated"
        return "holds" if self.strict is not False else "attained"

    def as_dict(self) -> dict:
        """The check as JSON-ready data (the rows of ``report.json``)."""
        return {"name": self.name, "verdict": self.verdict, "passed": self.passed, "strict": self.strict,
                "ratio": _f(self.ratio), "ratio_upper": _f(self.ratio_upper), "ratio_late": _f(self.ratio_late),
                "pooled": _f(self.pooled), "pooled_upper": _f(self.pooled_upper), "detail": self.detail}


@dataclass
class Series:
    """Curves of one step size, for plots."""

    steps: np.ndarray
    mean: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    bound: np.ndarray
    bound_empirical: np.ndarray
    local_mean: np.ndarray | None = None


@dataclass
class GroupResult:
    """Results for one step size of a case."""

    gamma: float
    constants: dict
    theorem: Check
    empirical: Check
    lemmas: list
    local: Check | None
    series: Series

    def as_dict(self) -> dict:
        """One step size's theorem, empirical-constant and lemma checks as JSON-ready data."""
        return {"gamma": self.gamma, "constants": {k: _f(v) for k, v in self.constants.items()},
                "theorem": self.theorem.as_dict(), "empirical_constants": self.empirical.as_dict(),
                "lemmas": [c.as_dict() for c in self.lemmas],
                "local_scaling": self.local.as_dict() if self.local else None}


@dataclass
class CaseResult:
    """Results of one case: ``status`` is ``"pass"``, ``"fail"`` or ``"skipped"`` (with ``reason``)."""

    case: Case
    status: str
    reason: str = ""
    groups: list = field(default_factory=list)
    elapsed: float = 0.0
    settings: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        """The case, its settings and every group of checks as JSON-ready data."""
        return {"case": self.case.describe(), "status": self.status, "reason": self.reason,
                "settings": {k: _f(v) for k, v in self.settings.items()},
                "groups": [g.as_dict() for g in self.groups], "elapsed_s": round(self.elapsed, 3)}

    def save(self, path) -> None:
        """Write the result to an ``.npz`` file atomically, exactly (``savic verify --resume``).

        The curves of each group are arrays; everything else is one JSON document (floats in
        ``repr`` form, so :meth:`load` gives back the same numbers). The case itself is stored as
        its :meth:`Case.describe`, and :meth:`load` takes the case again.
        """
        import json

        from ..cli._common import atomic_write

        arrays = {}
        groups = []
        for i, g in enumerate(self.groups):
            for name, value in vars(g.series).items():
                if value is not None:
                    arrays[f"group{i}.{name}"] = np.asarray(value)
            groups.append({"gamma": g.gamma, "constants": g.constants, "theorem": vars(g.theorem),
                           "empirical": vars(g.empirical), "lemmas": [vars(c) for c in g.lemmas],
                           "local": vars(g.local) if g.local is not None else None})
        meta = {"case": self.case.describe(), "status": self.status, "reason": self.reason,
                "elapsed": self.elapsed, "settings": self.settings, "groups": groups}
        arrays["meta"] = np.array(json.dumps(meta, default=_plain, allow_nan=True))
        with atomic_write(path, "wb") as fh:
            np.savez(fh, **arrays)

    @classmethod
    def load(cls, path, case: Case) -> "CaseResult":
        """Read a result written by :meth:`save`; ``case`` is supplied again and must match it."""
        import json

        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
        meta = json.loads(str(arrays.pop("meta")))
        if meta["case"] != json.loads(json.dumps(case.describe(), default=_plain)):
            raise ValueError(f"{path} holds the result of another case than {case.name!r}")
        groups = []
        for i, g in enumerate(meta["groups"]):
            curves = {name: arrays.get(f"group{i}.{name}") for name in Series.__dataclass_fields__}
            groups.append(GroupResult(g["gamma"], g["constants"], Check(**g["theorem"]), Check(**g["empirical"]),
                                      [Check(**c) for c in g["lemmas"]],
                                      Check(**g["local"]) if g["local"] is not None else None, Series(**curves)))
        return cls(case, meta["status"], meta["reason"], groups, meta["elapsed"], meta["settings"])


def _plain(v):
    """NumPy scalars and arrays as plain Python, for ``json.dumps`` (exact: ``repr`` of floats)."""
    if isinstance(v, (np.ndarray, np.generic)):
        return v.tolist()
    raise TypeError(f"cannot write {type(v).__name__} to JSON")


def _f(v):
    if isinstance(v, (np.ndarray, np.generic)):
        v = v.tolist()
    if isinstance(v, float) and not np.isfinite(v):
        return None if np.isnan(v) else ("inf" if v > 0 else "-inf")
    return v


# =========================================================================================
# Planning: β and γ before the run
# =========================================================================================
def _prior_Gamma(rule_name: str, e: float, problem) -> float:
    """``Γ`` known before the run, or an error for rules whose ``Γ`` needs the recorded ``G``."""
    expr = RULE_BOUNDS[rule_name].Gamma
    if "G" in {s.name for s in expr.free_symbols}:
        raise ValueError(f"beta='auto' needs a rule whose Γ is known before the run (identity, oasis), "
                         f"not {rule_name!r} (Γ = max(e, G) with G recorded during the run)")
    rule = _rules.make(rule_name) if rule_name == "identity" else _rules.make(rule_name, beta=0.5, e=e)
    return float(rule_Gamma(rule, problem, 0.0))


def _plan(case: Case, problem, nums: dict) -> dict:
    """γ values, β, and (complexity) the horizon: everything fixed before simulating."""
    thm = THEOREMS[case.theorem]
    rate = thm.extras.get("rate_theorem", thm)
    is_complexity = hasattr(thm, "plan")
    rule0 = _rules.make(case.rule) if case.rule == "identity" else _rules.make(case.rule, beta=0.5, e=case.e)
    alpha = float(rule_alpha(rule0))
    # the step-size conditions are tightest at Γ = α (the coupling term grows as Γ shrinks)
    gmax = float(rate.gamma_max(alpha=alpha, Gamma=alpha, delta=0.0, **nums))
    out: dict[str, Any] = {"alpha": alpha, "gamma_max": gmax, "beta": case.beta, "steps": case.steps}
    gammas = gmax * np.asarray(case.gamma_fracs, dtype=np.float64)
    auto = isinstance(case.beta, str)
    if auto and case.beta != "auto":
        raise ValueError(f"beta must be a number, a schedule or 'auto', got {case.beta!r}")
    if auto or is_complexity:
        Gamma = _prior_Gamma(case.rule, case.e, problem)
        out["Gamma_prior"] = Gamma
    if is_complexity:
        if case.eps_frac is None or case.eps_frac <= 0:
            raise ValueError(f"case {case.name}: the complexity theorem needs eps_frac > 0")
        target = case.eps_frac * float(nums["r0"])
        cond = thm.extras["beta_theorem"]
        d = 0.0
        if auto and case.rule != "identity":
            plan0 = thm.plan(eps=target, delta=0.0, alpha=alpha, Gamma=Gamma, **nums)
            dmax0 = float(evaluate(cond.extras["delta_max"], gamma=plan0["gamma"], Gamma=Gamma, **nums))
            for frac in (0.5, 0.25, 0.1, 0.01):  # find δ ≤ δ_max(γ_ε(δ))
                d = frac * dmax0
                g_d = thm.plan(eps=target, delta=d, alpha=alpha, Gamma=Gamma, **nums)["gamma"]
                if d <= float(evaluate(cond.extras["delta_max"], gamma=g_d, Gamma=Gamma, **nums)):
                    break
        plan = thm.plan(eps=target, delta=d, alpha=alpha, Gamma=Gamma, **nums)
        gammas = np.atleast_1d(plan["gamma"]).astype(np.float64)
        out.update(eps=target, steps=int(plan["steps"]), rounds=int(plan["rounds"]), delta_planned=d)
        if auto and case.rule != "identity":
            out["beta"] = float(evaluate(cond.extras["beta_min"][case.rule], delta=d * (1 - 1e-9), alpha=alpha,
                                         Gamma=Gamma))
    elif auto:
        if case.rule == "identity":
            out["beta"] = None
        else:
            dmax = float(np.min(evaluate(thm.extras["delta_max"], gamma=gammas, Gamma=Gamma, **nums)))
            out["beta"] = float(evaluate(thm.extras["beta_min"][case.rule], delta=dmax * (1 - 1e-6),
                                         alpha=alpha, Gamma=Gamma))
    out["gammas"] = gammas
    return out


def _make_rule(case: Case, beta):
    if case.rule == "identity":
        return _rules.make("identity")
    return _rules.make(case.rule, beta=beta, e=case.e)


# =========================================================================================
# The run and its checks
# =========================================================================================
#: statistical tests per step size of a case that can give ``violated``: the theorem (with the
#: complexity theorems' target ε), the consensus lemma and the one-step lemma
TESTS_PER_GROUP = 4


def run_case(case: Case, level: float = 0.99, family: int = 1) -> CaseResult:
    """Simulate ``case`` once (batched) and check its theorem and lemmas; see the module docstring.

    ``family``: the number of cases checked together (a suite). A ``violated`` verdict needs
    its lower limit above the bound with the Bonferroni quantile over the steps, the tests of
    every step size (:data:`TESTS_PER_GROUP` each) and the ``family`` cases, so that when every
    bound holds, the chance of any ``violated`` in the whole suite is at most ``1 − level``.
    The upper limits (``holds``) use the level itself, per step.
    """
    t_start = time.perf_counter()
    z = z_of(level)
    family = check_int("family", family, 1)
    if case.theorem not in THEOREMS:
        raise ValueError(f"unknown theorem {case.theorem!r}; known: {', '.join(THEOREMS)}")
    if case.rule not in RULE_BOUNDS:
        raise ValueError(f"unknown rule {case.rule!r}; known: {', '.join(RULE_BOUNDS)}")
    thm = THEOREMS[case.theorem]
    problem = get_problem(case.problem)
    identical_theorem = "consensus_identical" in thm.lemmas
    if identical_theorem and not problem.identical:
        return CaseResult(case, "skipped", f"theorem {thm.name} needs identical data; {case.problem} is not",
                          elapsed=time.perf_counter() - t_start)
    nums = problem_numbers(problem)
    nums["H"] = case.H
    plan = _plan(case, problem, nums)
    if plan["steps"] > MAX_PLANNED_STEPS:
        return CaseResult(case, "skipped", f"planned T = {plan['steps']} > {MAX_PLANNED_STEPS} steps",
                          elapsed=time.perf_counter() - t_start, settings=_settings(plan))
    rule = _make_rule(case, plan["beta"])
    gammas, S, T = plan["gammas"], case.seeds, plan["steps"]
    if S < 2:
        raise ValueError(f"case {case.name}: seeds must be >= 2 for a confidence limit, got {S}")
    gamma_runs = np.repeat(gammas, S)
    res = simulate(problem, rule, gamma=gamma_runs, steps=T, sync_every=case.H, seed=case.seed, record_every=1)
    res_local = None
    if case.local and not rule.is_static:
        res_local = simulate(problem, rule, gamma=gamma_runs, steps=T, sync_every=case.H, seed=case.seed,
                             record_every=1, scaling="local")
    # the error level of a violation, shared by every test of the family (Bonferroni)
    z_fail = bonferroni_z(z, family * TESTS_PER_GROUP * len(gammas))
    groups = []
    for g_idx, g in enumerate(gammas):
        idx = slice(g_idx * S, (g_idx + 1) * S)
        groups.append(_check_group(case, thm, problem, rule, res, res_local, idx, float(g), nums, plan, z,
                                   z_fail))
    failed = [f"{c.name}: {c.detail}" for gr in groups for c in [gr.theorem, *gr.lemmas] if c.passed is False]
    skipped = [gr.theorem.detail for gr in groups if gr.theorem.passed is None]
    if failed:  # a violation at one step size is not hidden by another outside the assumptions
        status, reason = "fail", "; ".join(failed)
    elif skipped:
        status, reason = "skipped", "; ".join(skipped)
    else:
        status, reason = "pass", ""
    return CaseResult(case, status, reason, groups, time.perf_counter() - t_start, _settings(plan))


def _settings(plan: dict) -> dict:
    keep = ("alpha", "gamma_max", "beta", "steps", "eps", "rounds", "delta_planned", "Gamma_prior")
    out = {k: plan[k] for k in keep if k in plan and not callable(plan[k])}
    if "gammas" in plan:
        out["gammas"] = np.asarray(plan["gammas"]).tolist()
    return out


def _check_group(case, thm, problem, rule, res, res_local, idx, gamma, nums, plan, z, z_fail=None) -> GroupResult:
    z_fail = z if z_fail is None else z_fail
    hist = {k: np.asarray(v)[:, idx] for k, v in res.history.items()}
    steps = np.asarray(res.steps)
    sync_steps = np.asarray(res.sync_steps)
    drift = np.asarray(res.drift).reshape(len(sync_steps), -1)[:, idx]
    drift_low = np.asarray(res.drift_min).reshape(len(sync_steps), -1)[:, idx]
    alpha = float(rule_alpha(rule))
    G = float(np.nanmax(hist["G_hat"])) if np.any(np.isfinite(hist["G_hat"])) else 0.0
    Gamma = float(rule_Gamma(rule, problem, G))
    n_updates = len(sync_steps) + rule.init_updates
    betas = update_betas(rule, max(n_updates, 1))
    deltas = drift_factors(rule.name, betas, alpha, Gamma, rule.init_updates)[: len(sync_steps)] \
        if len(sync_steps) else np.zeros(0)
    delta_max_seen = float(np.max(deltas) - 1.0) if deltas.size else 0.0
    numbers = dict(nums, gamma=gamma, alpha=alpha, Gamma=Gamma, delta=max(delta_max_seen, 0.0))
    # --- empirical constants
    a_hat = float(np.nanmin(hist["alpha_hat"]))
    G_hat = float(np.nanmax(hist["Gamma_hat"]))
    drift_hat = np.nanmax(drift, axis=1) if drift.size else np.zeros(0)
    drift_hat = np.where(np.isfinite(drift_hat), drift_hat, 1.0)
    constants = {"alpha": alpha, "Gamma": Gamma, "G": G, "delta_max": delta_max_seen,
                 "alpha_hat": a_hat, "Gamma_hat": G_hat,
                 "drift_hat_max": float(np.max(drift_hat)) if drift_hat.size else 1.0,
                 "drift_hat_min": float(np.nanmin(drift_low)) if np.any(np.isfinite(drift_low)) else 1.0}
    # --- the theorem's hypotheses at the numbers of this group
    ok = {k_: bool(np.all(v)) for k_, v in thm.check(**numbers).items()}
    dist = hist["dist_sq"]
    mean, se = mean_and_se(dist)
    n = dist.shape[-1]  # seeds: the limits use the Student-t quantiles with n − 1 degrees of freedom
    tq = t_quantile(z, n)
    upper, lower = mean + tq * se, mean - tq * se
    rate = thm.extras.get("rate_theorem")
    if rate is None:  # a rate theorem: the unrolled recursion along the actual syncs and δ_k
        bound = thm.curve(steps, sync_steps, deltas, **numbers)
        emp = thm.curve(steps, sync_steps, drift_hat, **dict(numbers, alpha=a_hat, Gamma=G_hat))
    else:  # β-condition / complexity: the closed form with δ = max_k δ_k
        bound = thm.extras["beta_theorem"].evaluate(t=steps, **numbers) if hasattr(thm, "plan") \
            else thm.evaluate(t=steps, **numbers)
        emp = rate.curve(steps, sync_steps, drift_hat, **dict(numbers, alpha=a_hat, Gamma=G_hat))
    series = Series(steps, mean, lower, upper, bound, emp)
    if not all(ok.values()):
        bad = ", ".join(k_ for k_, v in ok.items() if not v)
        theorem = Check(thm.name, None, detail=f"assumption not met: condition(s) {bad}")
    else:
        theorem = _compare(thm.name, mean, se, bound, steps, res.status, idx, z, z_fail,
                           runs=dist, since=since_sync(steps, sync_steps), n=n)
        if hasattr(thm, "plan"):
            reached = upper[-1] <= plan["eps"] * (1 + RTOL)
            theorem.detail += f"; target ε = {plan['eps']:.3g} after T = {plan['steps']}: E‖x̄_T−x*‖² ≤ " \
                              f"{upper[-1]:.3g} (upper limit) -> {'reached' if reached else 'NOT reached'}"
            theorem.passed = bool(theorem.passed and mean[-1] - t_quantile(bonferroni_z(z_fail, len(steps)), n) * se[-1]
                                  <= plan["eps"] * (1 + RTOL))
            theorem.strict = bool(theorem.strict and reached)
    empirical = _compare(f"{thm.name} (empirical constants)", mean, se, emp, steps, res.status, idx, z, n=n)
    empirical.detail = "informational: α̂, Γ̂ and the largest drift of each sync in place of α, Γ, δ_k; " \
                       + empirical.detail
    lemmas = [_check_dhat(rule, hist, alpha, Gamma), _check_drift(rule, drift, deltas),
              _check_consensus(thm, hist, steps, sync_steps, numbers, z, z_fail),
              _check_one_step(rule, hist, steps, sync_steps, deltas, numbers, z, z_fail)]
    local = None
    if res_local is not None:
        lm = np.asarray(res_local.history["dist_sq"])[:, idx]
        lmean, lse = mean_and_se(lm)
        series.local_mean = lmean
        local = _compare("local scaling vs the global-scaling bound", lmean, lse, bound, steps,
                         res_local.status, idx, z, n=lm.shape[-1])
        local.passed = local.strict = None
        local.detail = "no theorem for local scaling (informational); " + local.detail
    return GroupResult(gamma, constants, theorem, empirical, lemmas, local, series)


def _compare(name, mean, se, bound, steps, status, idx, z, z_fail=None, runs=None, since=None, n=None) -> Check:
    """Theorem check: strict (``mean + z·se ≤ bound`` at every step) and violation
    (``mean − z_B·se > bound`` at some step, ``z_B`` the Bonferroni quantile of ``z_fail``,
    default ``z``, over the steps and the pools); tightness ratios. Both quantiles become
    Student-t ones with ``n − 1`` degrees of freedom for ``n`` runs (``None``: normal).

    With the per-run values ``runs`` (steps, runs) and the steps since the last sync ``since``,
    the relative excess ``(X_t − bound_t)/bound_t`` is also tested pooled (:func:`pools`).
    """
    diverged = int(np.sum(np.asarray(status)[idx] == "diverged"))
    upper = mean + t_quantile(z, n) * se
    masks = pools(steps, since, np.isfinite(bound) & (bound > 0)) if runs is not None else []
    zb = bonferroni_z(z if z_fail is None else z_fail, len(steps) + len(masks))
    lower_b = mean - t_quantile(zb, n) * se
    with np.errstate(divide="ignore", invalid="ignore"):
        r_mean = np.where(bound > 0, mean / bound, np.where(mean > 0, np.inf, 0.0))
        r_up = np.where(bound > 0, upper / bound, np.where(upper > 0, np.inf, 0.0))
    finite = np.isfinite(mean)
    late = steps >= steps[-1] / 2
    ok = bool(diverged == 0 and np.all(finite) and np.all(lower_b <= bound * (1 + RTOL)))
    strict = bool(ok and np.all(upper <= bound * (1 + RTOL)))
    worst = int(np.nanargmax(r_up)) if np.any(np.isfinite(r_up)) else 0
    detail = (f"worst upper-limit/bound {r_up[worst]:.4g} at t = {int(steps[worst])}"
              + (f"; {diverged} run(s) diverged" if diverged else ""))
    check = Check(name, ok, float(np.nanmax(r_mean)), float(np.nanmax(r_up)),
                  float(np.nanmax(r_mean[late])), detail, strict)
    if masks:
        _pooled_test(check, np.asarray(runs, dtype=np.float64) - bound[:, None], bound, masks, z, zb)
    return check


def since_sync(steps, sync_steps) -> np.ndarray:
    """Steps since the last synchronisation at or before each recorded step (0 at ``t = 0``)."""
    steps = np.asarray(steps, dtype=np.int64)
    marks = np.concatenate([[0], np.asarray(sync_steps, dtype=np.int64)])
    last = marks[np.searchsorted(marks, steps, side="right") - 1]
    return steps - last


def pools(steps, since, usable=None) -> list:
    """The pools of steps tested together: steps ``t ≥ 1`` at one position in the round (steps
    since the last sync), in the first or in the second half of the horizon; pools of fewer
    than two steps are left out (their steps are tested on their own anyway).

    A bound that holds at every step holds for the mean over a pool of the relative excess
    ``(LHS_t − RHS_t)/RHS_t``, which is linear in each run; averaging the steps of a pool
    shrinks the sampling noise, so a small excess repeated over many rounds (a constant 10 %
    too small, say) shows as a violation where no single step could. Positions in the round
    and the two halves are pooled separately because tightness changes with both.
    """
    steps = np.asarray(steps)
    since = np.asarray(since)
    late = steps >= steps[-1] / 2
    usable = np.ones(len(steps), dtype=bool) if usable is None else np.asarray(usable, dtype=bool)
    out = []
    for n in np.unique(since):
        for half in (~late, late):
            m = (since == n) & half & (steps >= 1) & usable
            if m.sum() >= 2:
                out.append(m)
    return out


def _pooled_test(check: Check, excess, scale, masks, z, zb, tol=RTOL) -> None:
    """Add the pooled test of the relative excess ``excess / scale`` (``LHS − RHS`` per step and
    run, over the right side per step) to ``check``: a pool whose lower limit (``zb``) exceeds
    ``tol`` is a violation, one whose upper limit (``z``) does is not strict."""
    with np.errstate(divide="ignore", invalid="ignore"):  # steps with scale ≤ 0 are in no pool
        rel = excess / scale[:, None]
    per_run = np.stack([rel[m].mean(axis=0) for m in masks])  # (pools, runs)
    mean, se = mean_and_se(per_run)
    n = per_run.shape[-1]
    if not np.all(np.isfinite(mean)):  # a run not finite on a usable step: diverged
        check.passed, check.strict = False, False
        check.detail += "; pooled test: a run's relative excess is not finite"
        return
    worst = int(np.argmax(mean))
    check.pooled, check.pooled_upper = float(mean[worst]), float(np.max(mean + t_quantile(z, n) * se))
    if np.any(mean - t_quantile(zb, n) * se > tol):
        check.passed = False
    check.strict = bool(check.passed and check.strict and check.pooled_upper <= tol)
    check.detail += (f"; pooled over {len(masks)} groups of steps: largest mean excess "
                     f"{check.pooled:+.2%} of the bound, upper limit {check.pooled_upper:+.2%}")


def _check_dhat(rule, hist, alpha, Gamma) -> Check:
    a, G = hist["alpha_hat"], hist["Gamma_hat"]
    ok = bool(np.all(a[np.isfinite(a)] >= alpha * (1 - 1e-12)) and np.all(G[np.isfinite(G)] <= Gamma * (1 + 1e-12)))
    ratio = float(np.nanmax(G) / Gamma)
    return Check(f"dhat_bounds[{rule.name}]", ok, ratio, ratio, ratio,
                 f"α = {alpha:.3g} ≤ min α̂ = {np.nanmin(a):.3g}; max Γ̂ = {np.nanmax(G):.3g} ≤ Γ = {Gamma:.3g}", ok)


def _check_drift(rule, drift, deltas) -> Check:
    name = f"drift[{rule.name}]"
    if drift.size == 0:
        return Check(name, None, detail="no sync in the horizon")
    fin = np.isfinite(drift)
    ok = bool(np.all(np.where(fin, drift <= deltas[:, None] * (1 + 1e-12), True)))
    allowed = deltas[:, None] - 1.0
    with np.errstate(divide="ignore", invalid="ignore"):
        used = np.where(fin & (allowed > 0), (drift - 1.0) / allowed, np.nan)
    # no drift allowed (δ_k = 0, the identity rule) and none seen: nothing of δ_k used, as a
    # drift of exactly 1 under another rule reads
    ratio = float(np.nanmax(used)) if np.any(np.isfinite(used)) else (0.0 if ok else np.inf)
    return Check(name, ok, ratio, ratio, ratio,
                 f"max drift {np.nanmax(drift):.6g}, bound 1+δ_k from {np.min(deltas):.6g} to {np.max(deltas):.6g}; "
                 "ratio = largest (drift − 1)/δ_k", ok)


def _lemma_verdict(mz, sz, inside, tol, level_z, n_tests, fail_z=None, n=None):
    """(passed, strict, zb): no step where the lower limit (Bonferroni quantile ``zb`` over
    ``n_tests``, at the error level of ``fail_z``, default ``level_z``) exceeds the bound;
    ``strict``: the upper limit is below it at every step (Student-t quantiles for ``n`` runs)."""
    zb = bonferroni_z(level_z if fail_z is None else fail_z, n_tests)
    violated = np.any((mz - t_quantile(zb, n) * sz)[inside] > tol) or not np.all(np.isfinite(mz[inside]))
    strict = bool(np.all((mz + t_quantile(level_z, n) * sz)[inside] <= tol))
    return bool(not violated), strict, zb


def bonferroni_z(z, n_tests):
    """The one-sided quantile for ``n_tests`` simultaneous tests at the error level of ``z``."""
    from scipy.stats import norm

    a = norm.sf(z)  # one-sided error level of z
    return float(norm.isf(a / max(int(n_tests), 1)))


def _check_consensus(thm, hist, steps, sync_steps, numbers, z, z_fail=None) -> Check:
    lemma_name = "consensus_identical" if "consensus_identical" in thm.lemmas else "consensus_heterogeneous"
    lem = LEMMAS[lemma_name]
    if not np.array_equal(steps, np.arange(len(steps))):
        return Check(lemma_name, None, detail="needs record_every=1")
    V, fg = hist["consensus"], hist["f_gap"]
    T = len(steps) - 1
    since = since_sync(steps, sync_steps)
    last = steps - since  # last sync moment ≤ t
    n_t = since[:, None].astype(np.float64)
    Hb = 2.0 * fg + numbers["L"] * V  # E H̄_j ≤ 2 E f_gap_j + L E V_j (lemma bregman_average)
    C = np.concatenate([np.zeros((1, Hb.shape[1])), np.cumsum(Hb, axis=0)[:-1]])  # Σ_{j<t} Hb_j
    S = C - C[last]
    cH = evaluate(lem.extras["coef_Hbar"], n=n_t, **numbers)
    c0 = evaluate(lem.extras["const"], n=n_t, **numbers)
    rhs = cH * S + n_t * c0
    Zd = V - rhs
    mz, sz = mean_and_se(Zd)
    mv, _ = mean_and_se(V)
    mr, _ = mean_and_se(rhs)
    tol = 1e-12 * max(float(np.nanmax(np.abs(mr))), 1e-300)
    inside = n_t[:, 0] >= 1
    masks = pools(steps, since, inside & np.isfinite(mr) & (mr > 0))
    n = Zd.shape[-1]
    ok, strict, zb = _lemma_verdict(mz, sz, inside, tol, z, int(inside.sum()) + len(masks), z_fail, n)
    ok = ok and bool(np.all(np.abs(mv[~inside]) <= tol + 1e-300))  # V = 0 right after a sync
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(inside & (mr > 0), mv / mr, np.nan)
        ru = np.where(inside & (mr > 0), (mv + t_quantile(z, n) * sz) / mr, np.nan)
    late = steps >= T / 2
    if not np.any(np.isfinite(r)):
        return Check(lemma_name, ok, detail="no step inside a round (H = 1): V_t = 0 checked", strict=ok)
    check = Check(lemma_name, ok, float(np.nanmax(r)), float(np.nanmax(ru)),
                  float(np.nanmax(r[late])) if np.any(np.isfinite(r[late])) else float("nan"),
                  "E V_t against the lemma with E H̄_j ≤ 2 E f_gap_j + L E V_j, every step", strict)
    if masks:
        _pooled_test(check, Zd, mr, masks, z, zb)
    return check


def _check_one_step(rule, hist, steps, sync_steps, deltas, numbers, z, z_fail=None) -> Check:
    lem = LEMMAS["one_step"]
    if "dist_sq_D" not in hist:  # a result recorded without it
        return Check("one_step", None, detail="not checked: needs ‖x̄_t − x*‖²_D̂ per record "
                                              "(simulator history key 'dist_sq_D')")
    Phi, src = hist["dist_sq_D"], "dist_sq_D"
    if not np.array_equal(steps, np.arange(len(steps))):
        return Check("one_step", None, detail="needs record_every=1")
    fac = np.ones(len(steps))
    sync_pos = {int(s): i for i, s in enumerate(sync_steps)}
    for tt in range(1, len(steps)):
        if tt in sync_pos:
            fac[tt] = deltas[sync_pos[tt]]
    e = lem.extras
    num = dict(numbers)
    base = (evaluate(e["coef_Phi"], **num) * Phi[:-1] + evaluate(e["coef_V"], **num) * hist["consensus"][:-1]
            + evaluate(e["const"], **num))
    pred = fac[1:, None] * base  # (1+δ) after a sync (lemma norm_change)
    Zd = Phi[1:] - pred
    mz, sz = mean_and_se(Zd)
    mp, _ = mean_and_se(pred)
    mphi, _ = mean_and_se(Phi[1:])
    tol = 1e-12 * max(float(np.nanmax(np.abs(mp))), 1e-300)
    masks = [m[1:] for m in pools(steps, since_sync(steps, sync_steps),
                                  np.concatenate([[False], np.isfinite(mp) & (mp > 0)]))]
    n = Zd.shape[-1]
    ok, strict, zb = _lemma_verdict(mz, sz, np.ones(len(mz), dtype=bool), tol, z, len(mz) + len(masks), z_fail, n)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(mp > 0, mphi / mp, np.nan)
        ru = np.where(mp > 0, (mphi + t_quantile(z, n) * sz) / mp, np.nan)
    late = steps[1:] >= steps[-1] / 2
    check = Check("one_step", ok, float(np.nanmax(r)), float(np.nanmax(ru)), float(np.nanmax(r[late])),
                  f"E Φ_(t+1) ≤ (1+δ·[sync])((1−γμ/Γ) E Φ_t + γ(2L−μ) E V_t + γ²B_νσ²/(αM)) from {src}", strict)
    if masks:
        _pooled_test(check, Zd, mp, masks, z, zb)
    return check
