r"""The verification report: pass/fail and tightness per theorem and lemma, as JSON, Markdown, PNG.

``Report.summary()`` aggregates the case results: a theorem passes when every case checking it
passes; its tightness is the largest ``observed mean / bound`` over the cases and steps
(``worst_ratio``; near 1 at ``t = 0`` whenever ``α = Γ``), over the second half of each horizon
(``worst_ratio_late``: the figure that says how loose the bound is once the initial distance has
decayed) and for the upper confidence limit. Lemmas are aggregated the same way. Local scaling
is listed next to global scaling with its observed/bound ratio against the *global* bound, and
no verdict: the theory has no theorem for it.

Example
-------
>>> from savic_theory.verify import verify
>>> rep = verify("quick", progress=False)
>>> rep.passed, sorted(rep.summary()["theorems"])[0]
(True, 'beta_condition[identical]')
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["Report"]


@dataclass
class Report:
    """All case results of one verification run (and the adversarial search, when run)."""

    suite: str
    level: float
    cases: list
    elapsed: float = 0.0
    adversarial: list = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """True when no checked bound is violated (theorems, lemmas, adversarial confirmations)."""
        ok = all(c.status != "fail" for c in self.cases)
        ok = ok and all(a.passed for a in self.adversarial)
        return bool(ok)

    # ------------------------------------------------------------------ aggregation
    def summary(self) -> dict:
        """Per theorem and per lemma: verdict, number of checks, worst ratios and where."""
        theorems: dict = {}
        lemmas: dict = {}
        local = []
        for cr in self.cases:
            t = theorems.setdefault(cr.case.theorem, _blank())
            if cr.status == "skipped":
                t["skipped"].append(f"{cr.case.name}: {cr.reason}")
            for g in cr.groups:
                _fold(t, g.theorem, cr.case.name, g.gamma)
                for chk in g.lemmas:
                    _fold(lemmas.setdefault(chk.name, _blank()), chk, cr.case.name, g.gamma)
                if g.local is not None:
                    local.append({"case": cr.case.name, "gamma": g.gamma, "ratio": _num(g.local.ratio),
                                  "ratio_late": _num(g.local.ratio_late),
                                  "final_global": _num(g.series.mean[-1]), "final_local": _num(g.series.local_mean[-1])})
        for a in self.adversarial:
            t = theorems.setdefault(a.theorem, _blank())
            t["adversarial"].append(a.as_dict())
            _fold_search(t, a)
        for d in (*theorems.values(), *lemmas.values()):
            d["passed"] = d["passed"] if d["checked"] or d["searched"] else None
            d["verdict"] = overall_verdict(d)
        return {"theorems": theorems, "lemmas": lemmas, "local_scaling": local}

    def to_json(self) -> dict:
        """Everything, JSON-ready."""
        return {"suite": self.suite, "confidence_level": self.level, "passed": self.passed,
                "elapsed_s": round(self.elapsed, 2), "summary": self.summary(),
                "cases": [c.as_dict() for c in self.cases],
                "adversarial": [a.as_dict() for a in self.adversarial],
                "notes": NOTES}

    def to_markdown(self) -> str:
        """Tables of theorems, lemmas, cases and local scaling."""
        s = self.summary()
        n = len(self.cases)
        lines = [f"# `savic verify`: suite `{self.suite}`", "",
                 f"**{'NO BOUND VIOLATED' if self.passed else 'SOME BOUND VIOLATED'}** — {n} case{'' if n == 1 else 's'}, "
                 f"one-sided confidence level {self.level}, {self.elapsed:.1f} s."
                 + (f" A violation in a case needs a lower confidence limit above its bound with a Bonferroni "
                    f"correction over the steps, the tests and the cases of the suite: if every bound holds, "
                    f"the cases report one with probability at most {1 - self.level:.2g} (Student-t "
                    f"limits, exact for Gaussian per-run values); each confirmation of the adversarial search is a test of its own at "
                    f"the level." if self.cases else ""), "",
                 "Ratios are observed mean / bound (tightness; ≤ 1 when the bound holds, and above 1 only "
                 "insignificantly where the verdict is *attained*: the lower confidence limit stays below the "
                 "bound). *worst* is the largest "
                 "over all steps (close to 1 at t = 0 whenever α = Γ); *late* over the second half of each "
                 "horizon; *upper* uses the upper confidence limit, which must stay ≤ 1. *pooled* is the "
                 "largest mean relative excess (observed − bound)/bound over groups of steps (one position in "
                 "the round, one half of the horizon), tested like a step: near 0 % the inequality is met "
                 "with equality on average, and a small excess repeated over many steps shows as a violation "
                 "where no single step could.", "",
                 "## Theorems", "", "| theorem | verdict | checks | worst | late | upper | pooled | tightest case |",
                 "|---|---|---|---|---|---|---|---|"]
        if not self.cases:
            lines.append("| (no suite run: see the adversarial search) | | | | | | | |")
        for name, d in s["theorems"].items():
            if not d["checked"] and d["adversarial"] and not d["skipped"]:
                continue  # only searched: in the adversarial table
            lines.append(f"| `{name}` | {_verdict(d)} | {d['checked'] + d['searched']} | {_fmt(d['worst_ratio'])} | "
                         f"{_fmt(d['worst_ratio_late'])} | {_fmt(d['worst_ratio_upper'])} | {_pct(d['worst_pooled'])} | "
                         f"{d['worst_case']} |")
        skipped = [x for d in s["theorems"].values() for x in d["skipped"]]
        if skipped:
            lines += ["", "Skipped: " + "; ".join(skipped)]
        lines += ["", "## Lemmas (checked step by step on the same trajectories)", "",
                  "| lemma | verdict | checks | worst | late | pooled | not checked |", "|---|---|---|---|---|---|---|"]
        for name, d in s["lemmas"].items():
            lines.append(f"| `{name}` | {_verdict(d)} | {d['checked']} | {_fmt(d['worst_ratio'])} | "
                         f"{_fmt(d['worst_ratio_late'])} | {_pct(d['worst_pooled'])} | {d['unchecked']} |")
        if self.adversarial:
            lines += ["", "## Adversarial search (worst instance found, confirmed with fresh seeds)", "",
                      "*max D̂/min D̂* is the largest ratio of the largest to the smallest entry of D̂ in a record "
                      "of the confirmation, *max drift* the largest drift at a sync: how much the rule adapted "
                      "on the instance (1 and 1: D̂ stayed e·I, and the instance is one of Local SGD); "
                      "*asked* the max D̂/min D̂ an instance had to reach to count (`--min-spread`).", "",
                      "| rule | theorem | verdict | late ratio (search) | late ratio (confirmed) | upper ratio | "
                      "max D̂/min D̂ | asked | max drift | instance |",
                      "|---|---|---|---|---|---|---|---|---|---|"]
            for a in self.adversarial:
                verdict = _verdict(a.verdict) + ("" if a.spread_reached else
                                                 "; no instance reached the asked spread: not a worst case")
                lines.append(f"| {a.rule} | `{a.theorem}` | {verdict} | {_fmt(a.ratio_late)} | "
                             f"{_fmt(a.ratio_late_confirmed)} | {_fmt(a.ratio_upper_confirmed)} | "
                             f"{_fmt(_num(a.dhat_spread))} | ≥ {a.min_spread:g} | {_fmt(_num(a.drift_max))} | "
                             f"`{a.params_text()}` |")
        lines += ["", "## Cases", "", "| case | status | γ | theorem late ratio | α | Γ | max δ_k | α̂ | Γ̂ | max drift | "
                  "min drift |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        for cr in self.cases:
            if not cr.groups:
                lines.append(f"| {cr.case.name} | {cr.status} ({cr.reason}) | | | | | | | | | |")
            for g in cr.groups:
                c = g.constants
                lines.append(f"| {cr.case.name} | {cr.status} | {g.gamma:.3g} | {_fmt(g.theorem.ratio_late)} | "
                             f"{c['alpha']:.3g} | {c['Gamma']:.3g} | {c['delta_max']:.3g} | {c['alpha_hat']:.3g} | "
                             f"{c['Gamma_hat']:.3g} | {c['drift_hat_max']:.6g} | {_fmt(c.get('drift_hat_min'), 6)} |")
        if s["local_scaling"]:
            lines += ["", "## Local scaling (no theorem: observed against the global-scaling bound)", "",
                      "| case | γ | ratio | late ratio | final E‖x̄−x*‖² global | local |", "|---|---|---|---|---|---|"]
            for d in s["local_scaling"]:
                lines.append(f"| {d['case']} | {d['gamma']:.3g} | {_fmt(d['ratio'])} | {_fmt(d['ratio_late'])} | "
                             f"{_fmt(d['final_global'])} | {_fmt(d['final_local'])} |")
        lines += ["", "## Notes", ""] + [f"- {n}" for n in NOTES] + [""]
        return "\n".join(lines)

    # ------------------------------------------------------------------ files
    def write(self, folder) -> list[Path]:
        """Write ``report.json``, ``report.md`` and ``plots/<theorem>.png`` into ``folder``."""
        from ..cli._common import write_json

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        write_json(folder / "report.json", self.to_json())
        (folder / "report.md").write_text(self.to_markdown())
        return [folder / "report.json", folder / "report.md", *self.plot(folder / "plots")]

    def plot(self, folder) -> list[Path]:
        """One PNG per theorem: observed band and bound curves per case, log scale."""
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        out = []
        by_thm: dict = {}
        for cr in self.cases:
            if cr.groups:
                by_thm.setdefault(cr.case.theorem, []).append(cr)
        for name, crs in by_thm.items():
            n = len(crs)
            cols = min(4, n)
            rows = math.ceil(n / cols)
            fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.8 * rows), squeeze=False)
            for ax, cr in zip(axes.flat, crs):
                for gi, g in enumerate(cr.groups):
                    sr, col = g.series, f"C{gi}"
                    ax.fill_between(sr.steps, np.maximum(sr.lower, 1e-300), sr.upper, color=col, alpha=0.25, lw=0)
                    ax.plot(sr.steps, sr.mean, color=col, lw=1, label=f"observed γ={g.gamma:.2g}")
                    ax.plot(sr.steps, sr.bound, color=col, lw=1.5, ls="-", alpha=0.9, marker="",
                            label="bound" if gi == 0 else None, dashes=(6, 2))
                    ax.plot(sr.steps, sr.bound_empirical, color=col, lw=1, ls=":",
                            label="bound, empirical consts" if gi == 0 else None)
                    if sr.local_mean is not None:
                        ax.plot(sr.steps, sr.local_mean, color="k", lw=0.8, ls="-.", alpha=0.7,
                                label="local scaling" if gi == 0 else None)
                ax.set_yscale("log")
                ax.legend(fontsize=5, loc="lower left")  # each case has its own step sizes (and local runs)
                ax.set_title(f"{cr.case.name} [{cr.status}]", fontsize=8)
                ax.tick_params(labelsize=7)
                ax.set_xlabel("t", fontsize=7)
            for ax in list(axes.flat)[n:]:
                ax.axis("off")
            fig.suptitle(f"{name}: E‖x̄_t − x*‖² (band: one-sided {self.level} limits, lower and upper) vs bound",
                         fontsize=9)
            fig.tight_layout()
            path = folder / f"{_safe(name)}.png"
            fig.savefig(path, dpi=80)
            plt.close(fig)
            out.append(path)
        return out


NOTES = [
    "The bounds are this project's own derivations in the framework of the SAVIC paper (global scaling, "
    "αI ⪯ D̂ ⪯ ΓI, D̂ᵏ⁺¹ ⪯ (1+δ)D̂ᵏ); the paper's exact statements are not available. See docs/theory.md.",
    "Local scaling has no theorem: it is reported against the global-scaling bound for comparison only.",
    "Theoretical constants: α = e, Γ from each rule's dhat_bounds lemma (rmsprop/adam: Γ = max(e, G) with G² the "
    "largest entry of the statistic folded into D̂ during the runs, the clients' mean of g ⊙ g in global scaling, "
    "since Gaussian noise has no almost-sure bound), δ_k from the drift lemma.",
    "Verdicts (theorems and lemmas alike): 'holds' = the upper confidence limit is ≤ the bound at every step; "
    "'violated' = some step's lower confidence limit (Bonferroni over the steps) exceeds it, or a run diverged; "
    "'attained' = neither: the bound is reached within sampling noise (e.g. at t = 1 the bound's factor 1 − γμ/Γ "
    "meets the true (1 − γμ/Γ)², and from x⁰ ≈ x* the noise accumulates exactly as bounded). Only 'violated' fails.",
    "The one-step lemma is checked for every rule from the recorded ‖x̄_t − x*‖²_D̂ (history key 'dist_sq_D', "
    "with the D̂ in force at each step).",
]


def _blank() -> dict:
    return {"passed": True, "checked": 0, "searched": 0, "attained": 0, "unchecked": 0, "worst_ratio": 0.0,
            "worst_ratio_late": 0.0, "worst_ratio_upper": 0.0, "worst_pooled": None, "worst_case": "", "skipped": [],
            "adversarial": [], "details": []}


def _fold(d: dict, chk, case: str, gamma: float) -> None:
    if chk.passed is None:
        d["unchecked"] += 1
        return
    d["checked"] += 1
    _count(d, f"{case} (γ={gamma:.3g})", chk.passed, chk.verdict, f": {chk.detail}",
           worst_ratio=chk.ratio, worst_ratio_late=chk.ratio_late, worst_ratio_upper=chk.ratio_upper)
    pooled = _num(chk.pooled)
    if pooled is not None and (d["worst_pooled"] is None or pooled > d["worst_pooled"]):
        d["worst_pooled"] = pooled


def _fold_search(d: dict, a) -> None:
    """A confirmed worst instance of the search, counted in its theorem's verdict and ratios like
    a case (``searched`` apart from ``checked``, which counts the suite's step sizes)."""
    d["searched"] += 1
    _count(d, f"search {a.rule}/{a.theorem}", a.passed, a.verdict, "",
           worst_ratio_late=a.ratio_late_confirmed, worst_ratio_upper=a.ratio_upper_confirmed)


def _count(d: dict, where: str, passed, verdict: str, detail: str, **ratios) -> None:
    """One check's verdict and tightness ratios (``worst_ratio…`` keys of ``d``) folded into ``d``;
    the late ratio names ``where`` as the tightest case when it is the largest yet."""
    d["passed"] = d["passed"] and bool(passed)
    if verdict == "attained":
        d["attained"] += 1
    if verdict != "holds":
        d["details"].append(f"{where}: {verdict}{detail}")
    for key, val in ratios.items():
        v = _num(val)
        if v is not None and v > d[key]:
            d[key] = v
            if key == "worst_ratio_late":
                d["worst_case"] = where


def _num(v):
    v = float(v)
    return v if np.isfinite(v) else None


def _fmt(v, digits: int = 3) -> str:
    return "–" if v is None or (isinstance(v, float) and not np.isfinite(v)) else f"{v:.{digits}g}"


def _pct(v) -> str:
    return "–" if v is None else f"{v:+.1%}"


def overall_verdict(d: dict) -> str:
    """One verdict for a theorem or lemma over all its checks: the weakest among theirs.

    ``violated`` if any check is; else ``attained`` if any check reaches its bound within
    sampling noise (its mean may then exceed the bound, insignificantly); ``holds`` only when
    every check's upper confidence limit stays below the bound; ``not checked`` without checks.
    """
    if d["passed"] is None:
        return "not checked"
    if not d["passed"]:
        return "violated"
    return "attained" if d["attained"] else "holds"


def _verdict(d) -> str:
    if isinstance(d, dict):
        verdict = overall_verdict(d)
        if verdict == "attained":
            n = d["checked"] + d["searched"]  # the suite's step sizes and the searches (none for lemmas)
            return f"attained within noise ({d['attained']} of {n} check{'' if n == 1 else 's'})"
        d = verdict
    return {"violated": "**VIOLATED**"}.get(d, d)


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name).strip("_")

