"""Config files for ``savic verify`` and ``savic bench``, and one-line errors from every subcommand.

``savic simulate``/``savic run`` read ``[problem]``, ``[rule]``, ``[run]`` (tests/test_cli_simulate.py);
``verify`` and ``bench`` read a ``[verify]`` / ``[bench]`` table whose keys are their long
options. Whatever the user gets wrong, the command prints one line naming the problem and exits
with status 2.
"""
from __future__ import annotations

import json
import tomllib

import pytest

from savic_theory.cli import main

QUICK_VERIFY = '[verify]\nsuite = "quick"\ntheorem = ["identical"]\nno_progress = true\nlevel = 0.95\n'


def test_verify_reads_its_options_from_a_config_and_writes_them_back(tmp_path, capsys):
    cfg = tmp_path / "v.toml"
    cfg.write_text(QUICK_VERIFY + f'out = "{tmp_path / "from-file"}"\n')
    assert main(["verify", "--config", str(cfg)]) == 0
    report = json.loads((tmp_path / "from-file" / "report.json").read_text())
    assert report["suite"] == "quick" and report["confidence_level"] == 0.95
    assert report["cases"] and all(c["case"]["theorem"] == "identical" for c in report["cases"])
    written = tomllib.loads((tmp_path / "from-file" / "config.toml").read_text())["verify"]
    assert written["suite"] == "quick" and written["level"] == 0.95 and written["theorem"] == ["identical"]
    # the written config reruns the same verification; a flag wins over the file
    again = tmp_path / "again"
    assert main(["verify", "--config", str(tmp_path / "from-file" / "config.toml"), "--out", str(again),
                 "--level", "0.9"]) == 0
    rerun = json.loads((again / "report.json").read_text())
    assert rerun["confidence_level"] == 0.9
    assert [c["case"] for c in rerun["cases"]] == [c["case"] for c in report["cases"]]
    capsys.readouterr()


def test_a_theorem_flag_replaces_the_configs_list(tmp_path, capsys):
    cfg = tmp_path / "v.toml"
    cfg.write_text(QUICK_VERIFY)
    out = tmp_path / "o"
    assert main(["verify", "--config", str(cfg), "--theorem", "heterogeneous", "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["cases"] and all(c["case"]["theorem"] == "heterogeneous" for c in report["cases"])
    capsys.readouterr()


def test_bench_reads_its_options_from_a_config(tmp_path, capsys):
    cfg = tmp_path / "b.toml"
    out = tmp_path / "bench.json"
    cfg.write_text(f'[bench]\nruns = 2\nclients = 3\ndim = 4\nsteps = 12\nrepeats = 1\nrule = "oasis"\n'
                   f'json = "{out}"\n')
    assert main(["bench", "--config", str(cfg), "--steps", "6"]) == 0
    args = json.loads(out.read_text())["args"]
    assert (args["runs"], args["clients"], args["dim"], args["rule"], args["steps"]) == (2, 3, 4, "oasis", 6)
    assert "oasis (global), H = 10, 6 steps" in capsys.readouterr().out


BAD = {
    # (argv with {cfg} for the config file written from text, text, expected part of the message)
    "verify unknown key": (["verify", "--config", "{cfg}"], "[verify]\nsuites = 'quick'\n", "unknown key verify.suites"),
    "verify wrong type": (["verify", "--config", "{cfg}"], "[verify]\nlevel = 'high'\n", "verify.level must be of type float"),
    "verify bool": (["verify", "--config", "{cfg}"], "[verify]\nadversarial = 1\n", "verify.adversarial must be true or false"),
    "verify other table": (["verify", "--config", "{cfg}"], "[run]\nsteps = 3\n", "unknown config table [run]"),
    "verify key not in a table": (["verify", "--config", "{cfg}"], "level = 0.9\n[verify]\nsuite = 'quick'\n",
                                  "level is not in a table: put it under [verify]"),
    "run key not in a table": (["run", "{cfg}"], "steps = 10\n", "steps is not in a table: put it under [run]"),
    "verify unknown key not in a table": (["verify", "--config", "{cfg}"], "levle = 0.9\n",
                                          "levle is not in a table: this command reads only [verify]"),
    "verify range": (["verify", "--config", "{cfg}"], "[verify]\nlevel = 1.5\n", "--level must be in [0.5, 1)"),
    "verify rules": (["verify", "--config", "{cfg}"], "[verify]\nrules = ['adam', 'lion']\n", "unknown rule(s) in --rules: lion"),
    "verify not toml": (["verify", "--config", "{cfg}"], "[verify\n", "not valid TOML"),
    "verify missing file": (["verify", "--config", "/nonexistent/v.toml"], None, "config file not found"),
    "verify suite flag": (["verify", "--suite", "huge"], None, "unknown suite 'huge'"),
    "verify theorem flag": (["verify", "--theorem", "nope"], None, "unknown theorem(s) nope"),
    "bench choice": (["bench", "--config", "{cfg}"], "[bench]\nrule = 'lion'\n", "bench.rule must be one of"),
    "bench int": (["bench", "--config", "{cfg}"], "[bench]\nruns = 2.5\n", "bench.runs must be of type int"),
    "bench range": (["bench", "--runs", "0"], None, "--runs must be >= 1"),
    "run missing file": (["run", "/nonexistent/exp.toml"], None, "config file not found"),
    "run unknown key": (["run", "{cfg}"], "[rule]\nbeta2 = 0.9\n", "unknown key rule.beta2"),
    "run beta one": (["run", "{cfg}"], "[rule]\nbeta = 1.0\n", "rule.beta must lie in [0, 1)"),
    "run unknown rule": (["run", "{cfg}"], "[rule]\nname = ['adam', 'lion']\n", "lion"),
    "simulate negative gamma": (["simulate", "--gamma", "-0.1"], None, "run.gamma must be > 0"),
    "simulate negative seed": (["simulate", "--seed", "-1"], None, "run.seed must be >= 0, got -1"),
    "simulate key of the other kind": (["simulate", "--problem", "logistic", "--dim", "5"], None,
                                       'problem.dim applies to kind = "quadratic", not to kind = "logistic"'),
    "run key of the other kind": (["run", "{cfg}"], "[problem]\nlam = 0.1\n",
                                  'problem.lam applies to kind = "logistic", not to kind = "quadratic"'),
    "simulate negative problem seed": (["simulate", "--problem-seed", "-1"], None, "problem.seed must be >= 0"),
    "simulate config is a folder": (["simulate", "--config", "/"], None, "/ is a folder, not a config file"),
    "run config is a folder": (["run", "/"], None, "/ is a folder, not a config file"),
    "bench config is a folder": (["bench", "--config", "/"], None, "/ is a folder, not a config file"),
    "verify no rule": (["verify", "--adversarial-only", "--rules", ","], None, "--rules (verify.rules) names no rule"),
    "verify empty theorem name": (["verify", "--theorem="], None, "--theorem (verify.theorem) names no theorem"),
    "verify empty theorem list": (["verify", "--config", "{cfg}"], "[verify]\ntheorem = []\n",
                                  "--theorem (verify.theorem) names no theorem"),
    # beyond int64 the sizes wrapped round (a negative sync period) or overflowed with a traceback
    "simulate huge steps": (["simulate", "--steps", str(10**19)], None, "run.steps must be at most 2**62"),
    "simulate huge sync": (["simulate", "--sync-every", str(10**19)], None, "run.sync_every must be at most 2**62"),
    "simulate huge dim": (["simulate", "--dim", str(10**19)], None, "problem.dim must be at most 2**62"),
    "simulate x* overflows": (["simulate", "--heterogeneity", "1e200", "--steps", "5", "--runs", "2"], None,
                              "the problem's constants overflow float64"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_gives_one_line_and_status_2(tmp_path, capsys, case):
    argv, text, expected = BAD[case]
    cfg = tmp_path / "bad.toml"
    if text is not None:
        cfg.write_text(text)
    out = tmp_path / "never"
    argv = [a.replace("{cfg}", str(cfg)) for a in argv]
    if argv[0] in ("verify", "simulate", "run"):
        argv += ["--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and expected in err and "Traceback" not in err, err
    assert not out.exists()


@pytest.mark.parametrize("argv,expected", [
    (["simulate", "--steps", "ten"], "argument --steps: invalid int value: 'ten'"),
    (["verify", "--generations", "x"], "argument --generations: invalid int value: 'x'"),
    (["verify", "--bogus"], "savic verify: error: unrecognized arguments: --bogus"),
    (["simulate", "--bogus", "x"], "savic simulate: error: unrecognized arguments: --bogus x"),
    (["bench", "--rule", "lion"], "argument --rule: invalid choice: 'lion'"),
    (["nn"], "the following arguments are required: CONFIG.toml"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
])
def test_argument_errors_are_one_line(capsys, argv, expected):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and expected in err and "--help" in err, err
