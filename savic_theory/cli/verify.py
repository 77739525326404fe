"""``savic verify``: check every derived bound against simulation; exit 0 only if none is violated.

Runs a verification suite (each case one batched simulation of many seeds), checks each
theorem at every recorded step and each lemma along the same trajectories, and writes into
``--out`` (atomically): ``report.json``, ``report.md``, ``plots/<theorem>.png`` and
``config.toml`` (the options used, re-runnable with ``--config``). With
``--adversarial`` it also searches each rule's assumption class for the instance that maximises
observed/bound (differential evolution over batched candidates, Nelder–Mead refinement) and
confirms the worst one with fresh seeds; the search's options (``--rules``, ``--generations``,
``--popsize``, ``--min-spread``, ``--seed``) are refused without ``--adversarial`` or
``--adversarial-only``. Each case and each search is kept as it finishes in a
work folder beside ``--out`` (``.<name>.work``, as ``savic run`` does); ``--resume`` reuses
them after an interruption, with the same numbers as an uninterrupted run, and refuses a
``--suite``, ``--theorem``, ``--level``, ``--rules``, ``--generations``, ``--popsize``,
``--min-spread`` or ``--seed`` that differs from the interrupted run's. Without ``--resume`` a
leftover work folder is removed and the run starts afresh; with ``--resume`` and none, the run
simply starts. The work folder is removed once ``--out`` is written. Every option can also
come from the ``[verify]`` table of a TOML file (``--config``). Exit status: 0 when no bound is
violated, 1 when one is, 2 on bad input, 3 on an internal error (a bug).
"""
from __future__ import annotations

import argparse
import sys

from ._common import add_config_option

#: the theorems the counterexample search covers
SEARCHED = ("identical", "heterogeneous")

#: the search's options and their defaults: without --adversarial(-only) only these are accepted
SEARCH_DEFAULTS = {"rules": "identity,rmsprop,adam,oasis", "generations": 10, "popsize": 6, "min_spread": 1.0,
                   "seed": 0}


def add_parser(sub) -> None:
    p = sub.add_parser("verify", help="check the derived bounds against simulation (exit 1 if one fails)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--suite", default="default", help="suite of cases: default or quick (default: default)")
    p.add_argument("--theorem", action="append", metavar="NAME",
                   help="only the cases of this theorem, and with --adversarial only its search (the search "
                        "covers identical and heterogeneous; repeatable; default: all)")
    p.add_argument("--level", type=float, default=0.99,
                   help="one-sided confidence level of the upper limits; when every bound holds, the suite's cases "
                        "report a violation with probability at most 1 − LEVEL (default: 0.99)")
    p.add_argument("--adversarial", action="store_true",
                   help="also search each rule for the instance maximising observed/bound (default: off)")
    p.add_argument("--adversarial-only", action="store_true", help="run only the search (default: off)")
    p.add_argument("--rules", default=SEARCH_DEFAULTS["rules"],
                   help="rules searched by --adversarial, comma-separated (default: all four)")
    p.add_argument("--generations", type=int, default=SEARCH_DEFAULTS["generations"],
                   help="differential-evolution generations per search (default: 10)")
    p.add_argument("--popsize", type=int, default=SEARCH_DEFAULTS["popsize"],
                   help="population multiplier per search (candidates = popsize × parameters; default: 6)")
    p.add_argument("--min-spread", type=float, default=SEARCH_DEFAULTS["min_spread"], metavar="FACTOR",
                   help="count only instances on which D̂ adapts at least this much (max D̂/min D̂ over the run): "
                        "how tight the bounds are where the scaling acts; the adaptive rules' searches only "
                        "(default: 1, any instance)")
    p.add_argument("--seed", type=int, default=SEARCH_DEFAULTS["seed"], help="seed of the search (default: 0)")
    p.add_argument("--out", metavar="DIR", default="results/verify",
                   help="result folder, replaced atomically (default: results/verify)")
    p.add_argument("--resume", action="store_true",
                   help="reuse the finished cases and searches of an interrupted run with the same options "
                        "(default: off)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars (default: shown)")
    add_config_option(p, "verify", lists=("rules",))
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from ..verify import SUITES, Report, adversarial, verify
    from ..verify.resume import WorkArea
    from ..verify.suite import select_cases
    from ._common import UserError, atomic_dir, options_as_table

    if args.suite not in SUITES:
        raise UserError(f"unknown suite {args.suite!r}; known suites: {', '.join(SUITES)}")
    if not 0.5 <= args.level < 1.0:
        raise UserError(f"--level must be in [0.5, 1), got {args.level}")
    searching = args.adversarial or args.adversarial_only
    rules = [r.strip() for r in args.rules.split(",") if r.strip()]
    from ..theory import RULE_BOUNDS

    bad = [r for r in rules if r not in RULE_BOUNDS]
    if bad:
        raise UserError(f"unknown rule(s) in --rules: {', '.join(bad)}; known: {', '.join(RULE_BOUNDS)}")
    if searching and not rules:
        raise UserError("--rules (verify.rules) names no rule to search")
    if args.theorem is not None and (not args.theorem or not all(t.strip() for t in args.theorem)):
        raise UserError("--theorem (verify.theorem) names no theorem; leave it out to check them all")
    if args.generations < 1 or args.popsize < 1:
        raise UserError("--generations and --popsize must be >= 1")
    if not 1 <= args.min_spread < float("inf"):  # also refuses NaN
        raise UserError(f"--min-spread (verify.min_spread) must be a number >= 1, got {args.min_spread}")
    if not 0 <= args.seed < 2**32 - 1000:  # the confirmation runs use seed + 1000
        raise UserError(f"--seed must be in [0, {2**32 - 1000}), got {args.seed}")
    if not searching:
        values = dict(vars(args), rules=",".join(rules))  # the rules as listed, whatever the spacing
        unused = [name for name, default in SEARCH_DEFAULTS.items() if values[name] != default]
        if unused:
            named = ", ".join(f"--{n.replace('_', '-')} (verify.{n})" for n in unused)
            raise UserError(f"{named} appl{'ies' if len(unused) == 1 else 'y'} only to the counterexample search; "
                            "add --adversarial or --adversarial-only, or leave "
                            f"{'it' if len(unused) == 1 else 'them'} out")
    select_cases(args.suite, args.theorem)  # unknown theorems: an error before the work folder is touched
    searched = [t for t in SEARCHED if args.theorem is None or t in args.theorem]
    if searching and not searched:
        raise UserError(f"the search covers the {' and '.join(SEARCHED)} theorems; --theorem names neither")
    show = not args.no_progress
    work = WorkArea(args.out, _deciding_options(args, rules))
    if work.open(resume=args.resume):
        print(f"resuming the unfinished run kept in {work.path}/", file=sys.stderr)
    if args.adversarial_only:
        report = Report(args.suite, args.level, [])
    else:
        report = verify(args.suite, level=args.level, theorems=args.theorem, progress=show, work=work)
    if searching:
        report.adversarial = adversarial(rules, searched, progress=show, work=work, maxiter=args.generations,
                                         popsize=args.popsize, seed=args.seed, level=args.level,
                                         min_spread=args.min_spread)
        report.elapsed += sum(a.elapsed for a in report.adversarial)
    import tomli_w

    written = {k: v for k, v in options_as_table(args).items() if k != "resume"}  # how it ran, not what
    with atomic_dir(args.out) as tmp:
        report.write(tmp)
        (tmp / "config.toml").write_text(tomli_w.dumps({"verify": written}))
    work.remove()
    _print_summary(report)
    print(f"report written to {args.out}/ (report.md, report.json, plots/, config.toml)", file=sys.stderr)
    return 0 if report.passed else 1


def _deciding_options(args: argparse.Namespace, rules: list[str]) -> dict:
    """The options a resumed run must share with the interrupted one: those that decide the numbers."""
    return {"suite": args.suite, "theorem": sorted(set(args.theorem)) if args.theorem else None,
            "level": args.level, "rules": rules, "generations": args.generations, "popsize": args.popsize,
            "min_spread": args.min_spread, "seed": args.seed}


def _print_summary(report) -> None:
    s = report.summary()
    for name, d in s["theorems"].items():
        if not d["checked"] and d["adversarial"] and not d["skipped"]:
            continue  # only searched: reported on the adversarial lines below
        print(f"theorem {name}: {_verdict_text(d)}; tightness (mean/bound): worst "
              f"{_g(d['worst_ratio'])}, late {_g(d['worst_ratio_late'])}")
    for name, d in s["lemmas"].items():
        pooled = "" if d["worst_pooled"] is None else f", largest pooled excess {d['worst_pooled']:+.1%}"
        print(f"lemma {name}: {_verdict_text(d)}, {d['unchecked']} not checked; "
              f"worst mean/bound {_g(d['worst_ratio'])}{pooled}")
    for a in report.adversarial:
        asked = "" if a.min_spread <= 1 else f" (asked ≥ {a.min_spread:g})"
        missed = "" if a.spread_reached else "; no instance reached the asked spread, so this is not a worst case"
        print(f"adversarial {a.rule}/{a.theorem}: {a.verdict}; late ratio {a.ratio_late_confirmed:.3g} "
              f"(confirmed), max D̂/min D̂ {_g(a.dhat_spread)}{asked}, instance {a.params_text()}{missed}")
    print(f"{'no bound violated' if report.passed else 'A BOUND IS VIOLATED'} "
          f"({len(report.cases)} case{'' if len(report.cases) == 1 else 's'}, {report.elapsed:.1f} s)")


def _verdict_text(d) -> str:
    """``holds (n checks)``, ``attained within noise (k of n checks)``, ``VIOLATED (…)``."""
    verdict, n = d["verdict"], d["checked"] + d["searched"]  # the suite's step sizes and the searches
    checks = f"{n} check" + ("" if n == 1 else "s")
    if verdict == "attained":
        return f"attained within noise ({d['attained']} of {checks})"
    return f"{verdict.upper() if verdict == 'violated' else verdict} ({checks})"


def _g(v) -> str:
    return "–" if v is None or v != v else f"{v:.3g}"
