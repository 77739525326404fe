"""`savic verify --resume`: finished cases and searches kept beside --out, reused with the same numbers.

An interruption is simulated by a ``KeyboardInterrupt`` from the N-th case or search (what
Ctrl-C does); ``main`` answers it with status 130. Comparisons of report.json are exact: a
saved case comes back bit for bit (``.npz`` arrays, floats in ``repr`` form), and every case and
search is seeded on its own, so only the wall-clock fields ``elapsed_s`` may differ.
The searches run with tiny settings (``steps=40, seeds=8, refine=0, confirm_seeds=32``) through a
wrapper of the real :func:`search`, so each test takes a few seconds.
"""
from __future__ import annotations

import doctest
import json
import tomllib

import pytest

import savic_theory.verify as verify_pkg
from savic_theory.cli import main
from savic_theory.verify import resume, suite

SEARCH = verify_pkg.search
RUN_CASE = verify_pkg.run_case
TINY_SEARCH = dict(steps=40, seeds=8, refine=0, confirm_seeds=32)
QUICK = ["verify", "--suite", "quick", "--no-progress"]
ADVERSARIAL = ["--adversarial", "--rules", "identity", "--generations", "1", "--popsize", "1"]
QUICK_CASES = [c.name for c in suite.SUITES["quick"]]


class Calls:
    """Counts the cases and searches really run; raises KeyboardInterrupt at the N-th one."""

    def __init__(self, monkeypatch, interrupt_case_at=None, interrupt_search_at=None):
        self.cases, self.searches = [], []
        self.interrupt_case_at, self.interrupt_search_at = interrupt_case_at, interrupt_search_at
        monkeypatch.setattr(verify_pkg, "run_case", self.run_case)
        monkeypatch.setattr(verify_pkg, "search", self.search)

    def run_case(self, case, level=0.99, family=1):
        self.cases.append(case.name)
        if len(self.cases) == self.interrupt_case_at:
            raise KeyboardInterrupt
        return RUN_CASE(case, level=level, family=family)

    def search(self, rule, theorem, **kw):
        self.searches.append(f"{rule}/{theorem}")
        if len(self.searches) == self.interrupt_search_at:
            raise KeyboardInterrupt
        return SEARCH(rule, theorem, **kw, **TINY_SEARCH)


def numbers(folder) -> dict:
    """report.json without its wall-clock times (``elapsed_s``, at every level)."""
    def strip(o):
        if isinstance(o, dict):
            return {k: strip(v) for k, v in o.items() if k != "elapsed_s"}
        return [strip(v) for v in o] if isinstance(o, list) else o
    return strip(json.loads((folder / "report.json").read_text()))


def options(folder) -> dict:
    """config.toml's options, but the result folder."""
    table = tomllib.loads((folder / "config.toml").read_text())["verify"]
    return {k: v for k, v in table.items() if k != "out"}


def work_of(out):
    return out.with_name(f".{out.name}.work")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The quick suite and the identity searches, run once without interruption."""
    out = tmp_path_factory.mktemp("full") / "verify"
    with pytest.MonkeyPatch.context() as mp:
        calls = Calls(mp)
        assert main([*QUICK, *ADVERSARIAL, "--out", str(out)]) == 0
    assert calls.cases == QUICK_CASES and calls.searches == ["identity/identical", "identity/heterogeneous"]
    assert not work_of(out).exists()  # removed once the result folder is written
    return out


def test_interrupted_cases_resume_with_the_same_report(uninterrupted, tmp_path, monkeypatch, capsys):
    out = tmp_path / "verify"
    calls = Calls(monkeypatch, interrupt_case_at=3)
    assert main([*QUICK, *ADVERSARIAL, "--out", str(out)]) == 130
    assert "rerun with --resume" in capsys.readouterr().err
    assert not out.exists()  # no half-written result folder
    work = work_of(out)
    saved = sorted(p.name for p in (work / "cases").iterdir())
    assert saved == sorted(resume._safe(name) + ".npz" for name in QUICK_CASES[:2])  # only whole files
    assert json.loads((work / "options.json").read_text())["level"] == 0.99

    calls = Calls(monkeypatch)
    assert main([*QUICK, *ADVERSARIAL, "--resume", "--out", str(out)]) == 0
    assert calls.cases == QUICK_CASES[2:]  # the two saved cases were not run again
    assert calls.searches == ["identity/identical", "identity/heterogeneous"]
    assert f"resuming the unfinished run kept in {work}" in capsys.readouterr().err
    assert numbers(out) == numbers(uninterrupted)  # exact, timings aside
    assert options(out) == options(uninterrupted)
    plots = [sorted(p.name for p in (folder / "plots").iterdir()) for folder in (out, uninterrupted)]
    assert plots[0] == plots[1] and plots[0]
    assert not work.exists()


def test_interrupted_search_resumes_with_the_same_report(uninterrupted, tmp_path, monkeypatch, capsys):
    out = tmp_path / "verify"
    Calls(monkeypatch, interrupt_search_at=2)
    assert main([*QUICK, *ADVERSARIAL, "--out", str(out)]) == 130
    assert not out.exists()
    assert [p.name for p in (work_of(out) / "searches").iterdir()] == ["identity-identical.json"]

    calls = Calls(monkeypatch)
    assert main([*QUICK, *ADVERSARIAL, "--resume", "--out", str(out)]) == 0
    assert calls.cases == [] and calls.searches == ["identity/heterogeneous"]
    assert numbers(out) == numbers(uninterrupted)
    assert not work_of(out).exists()
    capsys.readouterr()


@pytest.mark.parametrize("argv,option", [
    (["--suite", "default"], "--suite"),
    (["--theorem", "identical"], "--theorem"),
    (["--level", "0.95"], "--level"),
    (["--rules", "identity,adam"], "--rules"),
    (["--generations", "2"], "--generations"),
    (["--popsize", "2"], "--popsize"),
    (["--seed", "1"], "--seed"),
    (["--min-spread", "2"], "--min-spread"),
])
def test_resume_with_other_options_is_a_one_line_error(tmp_path, monkeypatch, capsys, argv, option):
    out = tmp_path / "verify"
    Calls(monkeypatch, interrupt_case_at=2)  # one case finished: a run to resume
    assert main([*QUICK, *ADVERSARIAL, "--out", str(out)]) == 130
    options = (work_of(out) / "options.json").read_text()
    capsys.readouterr()
    calls = Calls(monkeypatch)
    assert main([*QUICK, *ADVERSARIAL, *argv, "--resume", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err, err
    assert err.startswith("savic verify: error: cannot resume: ") and f" {option} differs" in err, err
    assert calls.cases == [] and not out.exists()
    assert (work_of(out) / "options.json").read_text() == options  # the unfinished run is left as it was


def test_resume_from_the_config_file(tmp_path, monkeypatch, capsys):
    """``resume = true`` in the ``[verify]`` table; the options it checks may come from the file too."""
    out = tmp_path / "verify"
    argv = [*QUICK, "--theorem", "identical", "--theorem", "heterogeneous", "--out", str(out)]
    Calls(monkeypatch, interrupt_case_at=2)
    assert main(argv) == 130
    cfg = tmp_path / "v.toml"
    cfg.write_text("[verify]\nresume = true\nlevel = 0.95\n")
    assert main([*argv, "--config", str(cfg)]) == 2
    assert "cannot resume: --level differs" in capsys.readouterr().err
    cfg.write_text("[verify]\nresume = true\n")
    calls = Calls(monkeypatch)
    assert main([*argv, "--config", str(cfg)]) == 0
    assert calls.cases == ["het/quad/oasis/H4"]
    report = json.loads((out / "report.json").read_text())
    assert [c["case"]["name"] for c in report["cases"]] == ["id/quad/rmsprop/H4", "het/quad/oasis/H4"]
    assert "resume" not in options(out)  # how it ran, not what it computed
    capsys.readouterr()


def test_resume_without_a_work_folder_just_runs(uninterrupted, tmp_path, monkeypatch, capsys):
    out = tmp_path / "verify"
    calls = Calls(monkeypatch)
    assert main([*QUICK, "--theorem", "identical", "--resume", "--out", str(out)]) == 0
    assert calls.cases == ["id/quad/rmsprop/H4"]
    assert "resuming" not in capsys.readouterr().err
    full = numbers(uninterrupted)
    # a case's numbers do not depend on which other cases run
    assert numbers(out)["cases"] == [c for c in full["cases"] if c["case"]["theorem"] == "identical"]
    assert not work_of(out).exists()


def test_without_resume_a_leftover_work_folder_is_discarded(tmp_path, monkeypatch, capsys):
    out = tmp_path / "verify"
    argv = [*QUICK, "--theorem", "identical", "--theorem", "heterogeneous", "--out", str(out)]
    Calls(monkeypatch, interrupt_case_at=2)
    assert main(argv) == 130
    assert len(list((work_of(out) / "cases").iterdir())) == 1
    calls = Calls(monkeypatch)
    assert main([*argv, "--level", "0.95"]) == 0  # other options are fine: a fresh run
    assert calls.cases == ["id/quad/rmsprop/H4", "het/quad/oasis/H4"]  # nothing reused
    assert json.loads((out / "report.json").read_text())["confidence_level"] == 0.95
    assert not work_of(out).exists()
    capsys.readouterr()


def test_a_work_folder_of_another_command_is_not_resumed(tmp_path, capsys):
    out = tmp_path / "verify"
    work_of(out).mkdir()
    (work_of(out) / "config.sha").write_text("0123456789abcdef")  # what `savic run` leaves
    assert main([*QUICK, "--resume", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "holds an unfinished run of another command" in err
    assert (work_of(out) / "config.sha").exists() and not out.exists()


def test_bad_input_touches_no_work_folder(tmp_path, capsys):
    out = tmp_path / "verify"
    assert main([*QUICK, "--theorem", "fermat", "--out", str(out)]) == 2
    assert "unknown theorem(s) fermat" in capsys.readouterr().err
    assert not work_of(out).exists() and not out.exists()


@pytest.mark.parametrize("module", [resume, suite])
def test_docstring_examples_run(module):
    failures, tried = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert tried > 0 and failures == 0


def test_an_interrupt_before_any_case_finished_keeps_no_work_folder(tmp_path, monkeypatch, capsys):
    """The work folder's empty cases/ and searches/ are not finished work: it is removed."""
    def interrupted(*a, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(verify_pkg, "run_case", interrupted)
    out = tmp_path / "verify"
    assert main([*QUICK, "--out", str(out)]) == 130
    assert capsys.readouterr().err.strip().endswith(f"no result folder was written to {out} and nothing was kept")
    assert not work_of(out).exists() and not out.exists()


def test_a_run_of_another_version_of_the_checks_is_not_resumed(tmp_path, capsys):
    out = tmp_path / "verify"
    work_of(out).mkdir()
    stamp = work_of(out) / "options.json"
    stamp.write_text(json.dumps({"suite": "quick"}))  # written before checks_version existed
    assert main([*QUICK, "--resume", "--out", str(out)]) == 2
    assert "was checked by another version of savic_theory's checks" in capsys.readouterr().err
    assert stamp.exists()


def test_a_folder_saved_before_min_spread_existed_resumes_at_its_default(tmp_path, monkeypatch, capsys):
    """options.json written before --min-spread existed holds no min_spread: that run searched
    every instance, so it resumes with the default (1) and not with another value."""
    out = tmp_path / "verify"
    Calls(monkeypatch, interrupt_search_at=2)
    assert main([*QUICK, *ADVERSARIAL, "--out", str(out)]) == 130
    stamp = work_of(out) / "options.json"
    saved = json.loads(stamp.read_text())
    del saved["min_spread"]
    stamp.write_text(json.dumps(saved))
    capsys.readouterr()
    assert main([*QUICK, *ADVERSARIAL, "--min-spread", "2", "--resume", "--out", str(out)]) == 2
    assert "--min-spread differs from the unfinished run in" in capsys.readouterr().err
    calls = Calls(monkeypatch)
    assert main([*QUICK, *ADVERSARIAL, "--resume", "--out", str(out)]) == 0
    assert calls.cases == [] and calls.searches == ["identity/heterogeneous"]  # the rest was kept
