r"""Counterexample search: the instance of a theorem's assumption class that maximises observed/bound.

The assumption class searched is that of the rate theorems on diagonal quadratics with
additive noise: spectra (condition number ``κ`` and the spacing of the eigenvalues), client
heterogeneity (minimisers and spectra; identical data for the identical-data theorem), the
size of ``x*`` relative to the noise (``‖x*‖`` scale at fixed ``σ²``, so noise-dominated and
decay-dominated regimes are both reachable), the step size as a fraction of ``γ_max``, ``β``,
the clip level ``e`` and ``H``. ``e`` is searched as a fraction (``10^-1.5`` to just below 1) of
the largest entry of the rule's unclipped ``D`` at ``x⁰``, so that ``D̂`` adapts: at a larger
``e``, ``D̂ = e·I`` and the rule is the identity with step ``γ/e``, which the identity rule's own
search covers. Each result reports how much ``D̂`` did adapt (``dhat_spread``, the largest
``max D̂ / min D̂`` of a record) and the largest drift at a sync. One candidate is one problem instance on the simulator's instance axis,
replicated over seeds, and a whole population is one ``simulate`` call: SciPy's
``differential_evolution`` with ``vectorized=True`` evaluates each generation at once
(``H`` as an integer variable), then Nelder–Mead refines the continuous parameters of the best
candidate, and the worst instance found is re-run with fresh seeds (more of them) and checked at
every step (for the identity and OASIS rules, whose ``D̂`` does not depend on the noise on these
instances, also against the exact expectation, ``verify.exact``): ``violated`` when some step's lower limit (Bonferroni over steps) exceeds the bound,
``holds`` when every upper limit is below it, ``attained`` in between. Common random numbers (fixed seeds during the
search) make the objective deterministic.

The objective is the tightness over the second half of the horizon,
``max_{t ≥ T/2} mean_t / bound_t``: near ``t = 0`` the bound is trivially tight when ``α = Γ``.
The confirmation checks all steps. Everything needed to rebuild the instance is in
:meth:`AdversarialResult.params` and :func:`reproduce`.

Example
-------
>>> from savic_theory.verify.adversarial import search
>>> res = search("identity", "identical", maxiter=1, popsize=3, seeds=8, steps=60, refine=0, progress=False)
>>> res.passed, 0 < res.ratio_late_confirmed <= 1
(True, True)
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from scipy.optimize import differential_evolution, minimize

from .. import rules as _rules
from .._validation import check_int, check_nonnegative, check_positive
from ..problems.quadratic import Quadratic
from ..simulator import simulate
from ..theory import RULE_BOUNDS, THEOREMS, drift_factors
from .checks import _f, bonferroni_z
from .exact import exact_dist_sq
from .stats import mean_and_se, t_quantile, z_of

__all__ = ["AdversarialResult", "search", "reproduce", "instance_problem", "probe_scaling_rounds", "PARAMETERS",
           "NOISE"]

#: σ² of the additive noise of every candidate (the scale of x* sets the noise-to-signal ratio)
NOISE = 0.01

#: name -> (low, high, integer); which ones a search uses depends on the rule and the theorem
PARAMETERS = {
    "log10_kappa": (0.0, 2.5, False),       # L/μ with L = 1
    "log10_shape": (-1.0, 1.0, False),      # eigenvalues κ^{(i/(d−1))^q − 1}, q = 10^shape
    "log10_scale": (-2.0, 1.0, False),      # ‖x*‖ scale
    "heterogeneity": (0.0, 2.0, False),     # minimisers u + h v_m, spectra × exp(h z/2), clipped to [μ, L]
    "log10_gamma_frac": (-1.5, 0.0, False),  # γ = frac · γ_max
    "log10_one_minus_beta": (-4.0, -0.3, False),
    "log10_e_rel": (-1.5, -0.01, False),    # e = e_rel · the largest entry of the unclipped D at x⁰
    "H": (1, 16, True),
}


@dataclass
class AdversarialResult:
    """The worst instance found for one rule and theorem, and its confirmation."""

    rule: str
    theorem: str
    params: dict
    ratio_late: float
    ratio_late_confirmed: float
    ratio_upper_confirmed: float
    ratio_all_confirmed: float
    passed: bool
    strict: bool
    evaluations: int
    elapsed: float
    history: list = field(default_factory=list)
    exact: dict | None = None
    dhat_spread: float = float("nan")
    drift_max: float = float("nan")

    @property
    def verdict(self) -> str:
        """``holds`` (upper limit ≤ bound at every step, or the exact expectation ≤ bound),
        ``attained`` (within sampling noise) or ``violated``."""
        if not self.passed:
            return "violated"
        return "holds" if self.strict or (self.exact is not None and self.exact["holds"]) else "attained"

    @property
    def min_spread(self) -> float:
        """The ``max D̂/min D̂`` an instance had to reach to count (1: every instance)."""
        return float(self.params.get("min_spread", 1.0))

    @property
    def spread_reached(self) -> bool:
        """False when no candidate of the search reached ``min_spread``: every score was 0,
        and the instance reported is an arbitrary one, not a worst case."""
        return self.min_spread <= 1 or self.ratio_late > 0

    def params_text(self) -> str:
        """The instance's natural parameters (κ, q, scale, heterogeneity, γ, β, e, H) on one line."""
        keys = ("kappa", "q", "scale", "heterogeneity", "gamma", "beta", "e", "H")
        if RULE_BOUNDS[self.rule].drift == 1:  # identity: β and e are not used
            keys = tuple(k for k in keys if k not in ("beta", "e"))
        return ", ".join(f"{k}={self.params[k]:.4g}" for k in keys if k in self.params)

    def as_dict(self) -> dict:
        """The result as JSON-ready data; ``params`` rebuild the instance through :func:`reproduce`."""
        return {"rule": self.rule, "theorem": self.theorem, "params": self.params,
                "ratio_late_search": self.ratio_late, "ratio_late_confirmed": self.ratio_late_confirmed,
                "ratio_upper_confirmed": self.ratio_upper_confirmed, "ratio_all_confirmed": self.ratio_all_confirmed,
                "verdict": self.verdict, "passed": self.passed, "strict": self.strict, "exact": self.exact,
                "dhat_spread": _f(self.dhat_spread), "drift_max": _f(self.drift_max),
                "min_spread": self.min_spread, "spread_reached": self.spread_reached,
                "evaluations": self.evaluations, "elapsed_s": round(self.elapsed, 2),
                "reproduce": "savic_theory.verify.adversarial.reproduce(params)"}

    def save(self, path, settings: dict | None = None) -> None:
        """Write every field, and the ``settings`` it was searched with, as JSON atomically.

        Floats are written in ``repr`` form, so :meth:`load` gives back the same numbers
        (``savic verify --resume``).
        """
        from ..cli._common import write_json

        write_json(path, {"settings": settings or {}, "result": asdict(self)})

    @classmethod
    def load(cls, path) -> tuple["AdversarialResult", dict]:
        """Read a result written by :meth:`save`: ``(result, settings)``."""
        import json

        data = json.loads(Path(path).read_text())
        return cls(**data["result"]), data["settings"]


# ----------------------------------------------------------------------------- candidates
def _names(rule: str, theorem: str) -> list[str]:
    names = list(PARAMETERS)
    if "consensus_identical" in THEOREMS[theorem].lemmas:
        names.remove("heterogeneity")
    if RULE_BOUNDS[rule].drift == 1:  # identity: no β, no e
        names.remove("log10_one_minus_beta")
        names.remove("log10_e_rel")
    return names


def _natural(P: dict, K: int) -> dict:
    """Natural parameters (arrays of length K) from the search variables."""
    g = lambda k, default: np.asarray(P.get(k, np.full(K, default)), dtype=np.float64)
    return {"kappa": 10 ** g("log10_kappa", 1.0), "q": 10 ** g("log10_shape", 0.0),
            "scale": 10 ** g("log10_scale", 0.0), "heterogeneity": g("heterogeneity", 0.0),
            "gamma_frac": 10 ** g("log10_gamma_frac", 0.0), "beta": 1 - 10 ** g("log10_one_minus_beta", -3.0),
            "e_rel": 10 ** g("log10_e_rel", -0.3), "H": np.rint(g("H", 4)).astype(np.int64)}


def _top_of_D(rule: str, lam, xs) -> np.ndarray:
    """The largest entry of the rule's unclipped ``D`` at ``x⁰ = 0`` for each of the K instances.

    ``D⁰`` is built from the clients' mean statistic: ``diag(A_m)`` for a Hessian-probe rule
    (OASIS, exact on a diagonal quadratic) and ``E g_m ⊙ g_m = b_m² + σ²/d`` for a gradient rule,
    whose ``D`` is its square root. A clip level ``e`` below this leaves at least one coordinate
    of ``D̂⁰`` above ``e``: the rule adapts. At ``e`` above it, ``D̂ = e·I`` throughout (for
    OASIS) or at least at the start, and the rule is the identity with step ``γ/e``, which the
    identity rule's search covers already.
    """
    if _rules.make(rule).statistic is _rules.Statistic.HESSIAN_PROBE:
        return np.max(np.mean(lam, axis=1), axis=-1)
    b = lam * xs
    return np.sqrt(np.max(np.mean(b ** 2, axis=1) + NOISE / lam.shape[-1], axis=-1))


def _instances(nat: dict, d: int, M: int, draw_seed: int):
    """Diagonal spectra (K, M, d) and minimisers (K, M, d) for the K candidates."""
    rng = np.random.default_rng(draw_seed)
    u = rng.standard_normal(d) / np.sqrt(d)
    v = rng.standard_normal((M, d)) / np.sqrt(d)
    zs = rng.standard_normal((M, d))
    pos = np.linspace(0.0, 1.0, d) if d > 1 else np.zeros(1)
    kap, q, h = nat["kappa"][:, None], nat["q"][:, None], nat["heterogeneity"][:, None, None]
    base = kap ** (pos[None, :] ** q - 1.0)  # in [1/κ, 1], both ends attained
    # identical spectra when h = 0 (L and μ of each instance are recomputed from the arrays)
    lam = np.clip(base[:, None, :] * np.exp(0.5 * h * zs[None]), 1.0 / kap[:, :, None], 1.0)
    xs = nat["scale"][:, None, None] * (u[None, None, :] + h * v[None])
    return lam, xs


def instance_problem(kappa: float, q: float, scale: float, heterogeneity: float, *, d: int = 6, M: int = 4,
                     draw_seed: int = 1, noise: float = NOISE) -> Quadratic:
    """One instance of the search's class as a problem of its own: the diagonal quadratic that
    the natural parameters (as reported in ``params``) and the search's ``d``, ``M`` and
    ``draw_seed`` (its ``seed`` + 1) describe.

    Example
    -------
    >>> p = instance_problem(100.0, 1.0, 1.0, 0.0)
    >>> p.identical, round(p.L / p.mu)
    (True, 100)
    """
    kappa = check_positive("kappa", kappa, "the condition number L/μ")
    if kappa < 1:
        raise ValueError(f"kappa (the condition number L/μ) must be >= 1, got {kappa!r}")
    values = {"kappa": kappa, "q": check_positive("q", q, "the spectrum's shape exponent"),
              "scale": check_nonnegative("scale", scale, "the size of the minimisers"),
              "heterogeneity": check_nonnegative("heterogeneity", heterogeneity)}
    nat = {k: np.array([v], dtype=np.float64) for k, v in values.items()}
    lam, xs = _instances(nat, check_int("d", d, 2), check_int("M", M, 1), check_int("draw_seed", draw_seed, 0))
    return Quadratic(A=lam[0], b=lam[0] * xs[0], noise=noise)


_REPRODUCE_KEYS = ("kappa", "q", "scale", "heterogeneity", "gamma_frac", "beta", "e_rel", "H", "confirm_seeds",
                   "d", "M", "draw_seed", "noise", "rule", "e", "gamma", "steps", "confirm_seed")


def reproduce(params: dict):
    """Rebuild a reported instance: ``(problem, rule, simulate keyword arguments)``.

    Example
    -------
    >>> from savic_theory.verify.adversarial import search, reproduce
    >>> from savic_theory import simulate
    >>> r = search("identity", "identical", maxiter=1, popsize=3, seeds=8, steps=40, refine=0, progress=False)
    >>> prob, rule, kw = reproduce(r.params)
    >>> simulate(prob, rule, **kw).history["dist_sq"].shape[1] == r.params["confirm_seeds"]
    True
    """
    missing = [k for k in _REPRODUCE_KEYS if k not in params]
    if missing:
        raise ValueError(f"params lacks {', '.join(missing)}: pass a search result's params "
                         f"(AdversarialResult.params, or its entry in report.json)")
    nat = {k: np.atleast_1d(np.asarray(params[k], dtype=np.float64))
           for k in ("kappa", "q", "scale", "heterogeneity", "gamma_frac", "beta", "e_rel")}
    nat["H"] = np.atleast_1d(np.asarray(params["H"], dtype=np.int64))
    S = int(params["confirm_seeds"])
    lam, xs = _instances(nat, int(params["d"]), int(params["M"]), int(params["draw_seed"]))
    prob = Quadratic(A=np.repeat(lam, S, axis=0), b=np.repeat(lam * xs, S, axis=0), noise=float(params["noise"]))
    rule = _make_rule(params["rule"], np.full(S, params["beta"]), np.full(S, params["e"]))
    kw = dict(gamma=np.full(S, params["gamma"]), steps=int(params["steps"]), sync_every=np.full(S, int(params["H"])),
              seed=int(params["confirm_seed"]), record_every=1)
    return prob, rule, kw


def probe_scaling_rounds(rule, lam, n_syncs: int):
    """The ``D̂`` of every round when it does not depend on the noise, else ``None``.

    On a diagonal quadratic a Hessian-probe rule (OASIS) sees ``z ⊙ (A_m z) = diag(A_m)`` for
    every Rademacher ``z``: with global scaling its statistic is ``mean_m diag(A_m)`` at
    ``x⁰`` and at every sync, whatever the noise, so ``D̂⁰, D̂¹, …`` follow from the rule's
    own ``init``/``update``/``diagonal`` functions, as the simulator applies them.

    Parameters
    ----------
    rule : ScalingRule (one run: scalar or length-1 ``β`` and ``e``)
    lam : array (M, d)
        The clients' diagonal Hessians.
    n_syncs : int
        Number of syncs; rows ``0 … n_syncs`` of the result are the rounds' ``D̂``.
    """
    n_syncs = check_int("n_syncs", n_syncs, 0)
    lam = np.asarray(lam, dtype=np.float64)
    if lam.ndim != 2 or lam.size == 0:
        raise ValueError(f"lam must be an array (M, d) of diagonal client Hessians, got shape {lam.shape}")
    if rule.statistic is not _rules.Statistic.HESSIAN_PROBE:
        return None
    s = np.mean(lam, axis=0)[None, None, :]
    e = np.asarray(rule.e, dtype=np.float64).reshape(-1)[:1].reshape(1, 1, 1)

    def beta(k):
        return np.asarray(rule.beta.values(k), dtype=np.float64).reshape(-1)[:1].reshape(1, 1, 1)

    k = np.ones(1, dtype=np.int64)
    state = rule.init(s, beta(k), np)
    k = np.full(1, rule.init_updates, dtype=np.int64)
    rounds = [_rules.clip(rule.diagonal(state, np), e, np)[0, 0]]
    for _ in range(n_syncs):
        k += 1
        state = rule.update(state, s, beta(k), np)
        rounds.append(_rules.clip(rule.diagonal(state, np), e, np)[0, 0])
    return np.array(rounds)


def _make_rule(name, beta, e):
    return _rules.make("identity") if RULE_BOUNDS[name].drift == 1 else _rules.make(name, beta=beta, e=e)


def _evaluate(rule: str, theorem: str, nat: dict, *, d, M, steps, seeds, seed, draw_seed, record_every,
              level=0.99):
    """Simulate K candidates × seeds in one call; ratios per candidate and the pieces for a report."""
    thm = THEOREMS[theorem]
    K = len(nat["kappa"])
    lam, xs = _instances(nat, d, M, draw_seed)
    S = seeds
    prob = Quadratic(A=np.repeat(lam, S, axis=0), b=np.repeat(lam * xs, S, axis=0), noise=NOISE)
    if "consensus_identical" in thm.lemmas and not prob.identical:
        raise AssertionError("identical-data candidates must have identical clients")  # pragma: no cover
    c = prob.constants
    take = np.arange(K) * S  # one instance per candidate for its constants
    Lc, muc = np.asarray(c.L)[take], np.asarray(c.mu)[take]
    zeta2 = np.asarray(c.zeta2)[take]
    r0 = np.sum(np.asarray(c.x_star)[take] ** 2, axis=-1)
    rb = RULE_BOUNDS[rule]
    static = rb.drift == 1
    nat = dict(nat, e=np.ones(K) if static else nat["e_rel"] * _top_of_D(rule, lam, xs))
    alpha = np.ones(K) if static else nat["e"]
    nums = dict(L=Lc, mu=muc, M=M, H=nat["H"], sigma2=NOISE, zeta2=zeta2, A_nu=0.0, B_nu=1.0, r0=r0)
    gmax = thm.gamma_max(alpha=alpha, Gamma=alpha, delta=0.0, **nums)
    gamma = nat["gamma_frac"] * gmax
    rr = _make_rule(rule, np.repeat(nat["beta"], S), np.repeat(nat["e"], S))
    res = simulate(prob, rr, gamma=np.repeat(gamma, S), steps=steps, sync_every=np.repeat(nat["H"], S),
                   seed=seed, record_every=record_every)
    dist = np.asarray(res.history["dist_sq"]).reshape(len(res.steps), K, S)
    G = np.nanmax(np.asarray(res.history["G_hat"]).reshape(len(res.steps), K, S), axis=(0, 2))
    if static:
        Gamma = np.ones(K)
    elif "G_H" in {s_.name for s_ in rb.Gamma.free_symbols}:
        Gamma = np.maximum(nat["e"], np.asarray(prob.hessian_bound())[take])
    else:
        Gamma = np.maximum(nat["e"], G)
    # δ_k per candidate at its own sync moments
    syncs = np.asarray(res.sync_steps)
    n_upd = int(steps // max(1, nat["H"].min())) + 1 + rr.init_updates
    betas = np.broadcast_to(nat["beta"], (n_upd, K)) if not static else np.zeros((n_upd, K))
    dk = drift_factors(rule, betas, alpha, Gamma, rr.init_updates)  # (n_syncs_max, K)
    drift = np.ones((len(syncs), K))
    for i, s_ in enumerate(syncs):
        on = s_ % nat["H"] == 0
        idx = s_ // nat["H"] - 1
        drift[i, on] = dk[idx[on], np.nonzero(on)[0]]
    numbers = dict(nums, gamma=gamma, alpha=alpha, Gamma=Gamma, delta=np.max(dk, axis=0) - 1.0)
    bound = thm.curve(res.steps, syncs, drift, **numbers)
    holds = thm.holds(**numbers)
    mean, se = mean_and_se(dist, axis=-1)
    z, n = z_of(level), dist.shape[-1]  # Student-t limits with n − 1 degrees of freedom
    upper = mean + t_quantile(z, n) * se
    lower_b = mean - t_quantile(bonferroni_z(z, len(res.steps)), n) * se
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(np.isfinite(mean), mean / bound, np.inf)
        ru = np.where(np.isfinite(upper), upper / bound, np.inf)
    late = res.steps >= steps / 2
    ratio_late = np.max(r[late], axis=0)
    ratio_late = np.where(holds, ratio_late, 0.0)  # a candidate outside the assumptions does not count
    with np.errstate(divide="ignore", invalid="ignore"):
        spread = np.asarray(res.history["Gamma_hat"]) / np.asarray(res.history["alpha_hat"])
    seen = np.asarray(res.drift, dtype=np.float64).reshape(len(syncs), K, S) if len(syncs) else np.ones((1, K, S))
    return {"ratio_late": ratio_late, "ratio_all": np.max(r[1:], axis=0), "ratio_upper": np.max(ru, axis=0),
            "e": nat["e"], "dhat_spread": np.nanmax(spread.reshape(len(res.steps), K, S), axis=(0, 2)),
            "drift_max": np.nanmax(seen, axis=(0, 2)),
            "bound": bound, "steps": np.asarray(res.steps), "lam": lam, "xs": xs,
            "strict": np.all(upper <= bound * (1 + 1e-9), axis=0) & np.all(np.isfinite(mean), axis=0),
            "not_violated": np.all(lower_b <= bound * (1 + 1e-9), axis=0) & np.all(np.isfinite(mean), axis=0),
            "gamma": gamma, "gamma_max": gmax, "assumptions": holds}


def search(rule: str = "rmsprop", theorem: str = "heterogeneous", *, d: int = 6, M: int = 4, steps: int = 200,
           seeds: int = 16, popsize: int = 6, maxiter: int = 10, refine: int = 30, confirm_seeds: int = 256,
           seed: int = 0, level: float = 0.99, min_spread: float = 1.0, progress: bool = True) -> AdversarialResult:
    """Search ``theorem``'s assumption class with ``rule`` for the largest observed/bound ratio.

    Parameters
    ----------
    rule : key of ``savic_theory.rules.RULES``.
    theorem : ``"identical"`` or ``"heterogeneous"``.
    d, M, steps : dimension, clients and horizon of every candidate.
    seeds : seeds per candidate during the search (common random numbers).
    popsize, maxiter : ``differential_evolution`` population multiplier and generations.
    refine : Nelder–Mead function evaluations on the best candidate (0: none).
    confirm_seeds : seeds of the confirmation run (fresh seed).
    seed : seed of the search (the optimiser, the draws of the instances and the noise).
    level : one-sided confidence level of the confirmation.
    min_spread : only instances on which ``D̂`` adapts at least this much count: the largest
        ``max D̂ / min D̂`` of a record of the search's runs must reach it (1: every instance).
        The worst instances of the adaptive rules otherwise sit where ``D̂`` barely moves, since
        the bounds carry ``Γ/α``; a larger value asks how tight they are where it does.
    """
    if theorem not in ("identical", "heterogeneous"):
        raise ValueError(f"theorem must be 'identical' or 'heterogeneous', got {theorem!r}")
    if rule not in RULE_BOUNDS:
        raise ValueError(f"unknown rule {rule!r}; known: {', '.join(RULE_BOUNDS)}")
    for name, val, low in (("d", d, 2), ("M", M, 1), ("steps", steps, 2), ("seeds", seeds, 2),
                           ("popsize", popsize, 1), ("maxiter", maxiter, 1), ("confirm_seeds", confirm_seeds, 2)):
        check_int(name, val, low)
    if isinstance(min_spread, bool) or not isinstance(min_spread, (int, float)) or not 1 <= min_spread < np.inf:
        raise ValueError(f"min_spread must be a number >= 1, got {min_spread!r}")
    if min_spread > 1 and RULE_BOUNDS[rule].drift == 1:
        raise ValueError(f"min_spread > 1 needs an adaptive rule; {rule!r} keeps D̂ = I")
    t0 = time.perf_counter()
    names = _names(rule, theorem)
    lows = np.array([PARAMETERS[n][0] for n in names], dtype=np.float64)
    highs = np.array([PARAMETERS[n][1] for n in names], dtype=np.float64)
    integral = np.array([PARAMETERS[n][2] for n in names])
    common = dict(d=d, M=M, steps=steps, seeds=seeds, seed=seed, draw_seed=seed + 1,
                  record_every=max(1, steps // 100), level=level)
    evals = [0]
    history: list = []
    bar = None
    if progress:
        from ..cli._common import progress as _progress

        bar = _progress(maxiter + 1 + (1 if refine else 0), f"search {rule}/{theorem}")

    def batch(X):  # X: (n_params, K)
        X = np.atleast_2d(X)
        P = {n: X[i] for i, n in enumerate(names)}
        out = _evaluate(rule, theorem, _natural(P, X.shape[1]), **common)
        evals[0] += X.shape[1]
        ratio = np.where(out["dhat_spread"] >= min_spread, out["ratio_late"], 0.0)
        history.append(float(np.max(ratio)))
        if bar is not None:
            bar.update(1)
        return -ratio

    de = differential_evolution(batch, list(zip(lows, highs)), vectorized=True, updating="deferred",
                                popsize=popsize, maxiter=maxiter, seed=seed, integrality=integral, polish=False,
                                tol=0.0, init="latinhypercube")
    x_best, f_best = np.array(de.x), float(de.fun)
    if refine:
        cont = ~integral

        def single(xc):
            x = x_best.copy()
            x[cont] = np.clip(xc, lows[cont], highs[cont])
            return float(batch(x[:, None])[0])

        nm = minimize(single, x_best[cont], method="Nelder-Mead", bounds=list(zip(lows[cont], highs[cont])),
                      options={"maxfev": refine, "xatol": 1e-3, "fatol": 1e-4})
        if nm.fun < f_best:
            x_best[cont], f_best = np.clip(nm.x, lows[cont], highs[cont]), float(nm.fun)
    if bar is not None:
        bar.close()
    # confirmation with fresh seeds, every step recorded
    P = {n: np.array([x_best[i]]) for i, n in enumerate(names)}
    nat = _natural(P, 1)
    conf = _evaluate(rule, theorem, nat, d=d, M=M, steps=steps, seeds=confirm_seeds, seed=seed + 1000,
                     draw_seed=seed + 1, record_every=1, level=level)
    exact = None
    nat["e"] = conf["e"]
    Ds = None if RULE_BOUNDS[rule].drift == 1 else probe_scaling_rounds(
        _make_rule(rule, nat["beta"][:1], nat["e"][:1]), conf["lam"][0], steps // int(nat["H"][0]))
    if RULE_BOUNDS[rule].drift == 1 or Ds is not None:
        # D̂ = I, or a D̂ sequence that does not depend on the noise: the expectation is known
        # exactly (a linear-Gaussian system, verify.exact)
        ex = exact_dist_sq(conf["lam"][0], conf["lam"][0] * conf["xs"][0], float(conf["gamma"][0]), steps,
                           int(nat["H"][0]), NOISE, D=Ds)
        bnd = conf["bound"][:, 0]
        exact = {"ratio_late": float(np.max((ex / bnd)[conf["steps"] >= steps / 2])),
                 "ratio_all": float(np.max(ex[1:] / bnd[1:])), "holds": bool(np.all(ex <= bnd * (1 + 1e-9)))}
    params = {k: float(v[0]) for k, v in nat.items()}
    params.update(H=int(nat["H"][0]), gamma=float(conf["gamma"][0]), gamma_max=float(conf["gamma_max"][0]),
                  rule=rule, theorem=theorem, d=d, M=M, steps=steps, noise=NOISE, draw_seed=seed + 1,
                  confirm_seed=seed + 1000, confirm_seeds=confirm_seeds, search_seed=seed, min_spread=float(min_spread))
    return AdversarialResult(
        rule=rule, theorem=theorem, params=params, ratio_late=-f_best,
        ratio_late_confirmed=float(conf["ratio_late"][0]), ratio_upper_confirmed=float(conf["ratio_upper"][0]),
        ratio_all_confirmed=float(conf["ratio_all"][0]),
        dhat_spread=float(conf["dhat_spread"][0]), drift_max=float(conf["drift_max"][0]),
        passed=bool(conf["not_violated"][0] and conf["assumptions"][0] and (exact is None or exact["holds"])),
        strict=bool(conf["strict"][0]), evaluations=evals[0], elapsed=time.perf_counter() - t0, history=history,
        exact=exact)
