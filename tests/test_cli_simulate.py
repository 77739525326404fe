"""`savic simulate`: results written atomically, configs, and errors as one line."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from savic_theory.cli import main
from savic_theory.cli._common import atomic_dir

SMALL = ["--dim", "4", "--clients", "3", "--steps", "40", "--runs", "2", "--no-progress"]


def test_simulate_writes_all_result_files(tmp_path, capsys):
    out = tmp_path / "res"
    assert main(["simulate", *SMALL, "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["config.toml", "drift.csv", "history.csv",
                                                     "plot.png", "summary.json"]
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary) == {"adam-global", "adam-local"}
    assert summary["adam-global"]["rule"] == "adam" and summary["adam-local"]["scaling"] == "local"
    assert summary["adam-global"]["points"][0]["runs"] == 2
    with (out / "history.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 2 * 2 * 41  # scalings × runs × records
    assert (out / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = capsys.readouterr().out
    assert "adam global" in text and "adam  local" in text


def test_resolved_config_reruns_identically(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(["simulate", *SMALL, "--rule", "oasis", "--beta", "0.9", "--scaling", "local",
                 "--out", str(a)]) == 0
    assert main(["simulate", "--config", str(a / "config.toml"), "--no-progress", "--out", str(b)]) == 0
    ha = np.loadtxt(a / "history.csv", delimiter=",", skiprows=1, usecols=range(8, 14))
    hb = np.loadtxt(b / "history.csv", delimiter=",", skiprows=1, usecols=range(8, 14))
    np.testing.assert_array_equal(ha, hb)


def test_config_file_and_flag_override(tmp_path):
    cfg = tmp_path / "exp.toml"
    cfg.write_text('[problem]\ndim = 3\nclients = 2\n[rule]\nname = "rmsprop"\n[run]\nsteps = 10\nruns = 1\n')
    out = tmp_path / "o"
    assert main(["simulate", "--config", str(cfg), "--steps", "12", "--no-progress", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary) == ["rmsprop-global", "rmsprop-local"]
    steps = np.loadtxt(out / "history.csv", delimiter=",", skiprows=1, usecols=7, dtype=int)
    assert steps.max() == 12


BAD_CONFIGS = {
    "unknown table": ("[solver]\nx = 1\n", "unknown config table [solver]"),
    "unknown key": ("[run]\nstepz = 3\n", "unknown key run.stepz"),
    "wrong type": ('[run]\nsteps = "many"\n', "run.steps must be of type int"),
    "bool for int": ("[run]\nsteps = true\n", "run.steps must be of type int"),
    "out of range beta": ("[rule]\nbeta = 1.0\n", "rule.beta must lie in [0, 1)"),
    "negative gamma": ("[run]\ngamma = -0.1\n", "run.gamma must be > 0"),
    "bad scaling": ('[run]\nscaling = "all"\n', "run.scaling must be 'global', 'local', 'both' or a list"),
    "both in a list": ('[run]\nscaling = ["both"]\n', "run.scaling must be"),
    "infinite e": ("[rule]\ne = inf\n", "rule.e must be > 0 and finite, got inf"),
    "infinite gamma in a grid": ("[run]\ngamma = [0.1, inf]\n", "run.gamma must be > 0 and finite, got inf"),
    "NaN gamma": ("[run]\ngamma = nan\n", "run.gamma must be > 0 and finite, got nan"),
    "infinite L": ("[problem]\nL = inf\n", "problem.L must be > 0 and finite, got inf"),
    "infinite mu": ("[problem]\nmu = inf\n", "problem.mu must be > 0 and finite, got inf"),
    "infinite lam": ('[problem]\nkind = "logistic"\nlam = inf\n', "problem.lam must be > 0 and finite, got inf"),
    "infinite noise": ("[problem]\nnoise = inf\n", "problem.noise must be a finite number, got inf"),
    "NaN heterogeneity": ("[problem]\nheterogeneity = nan\n", "problem.heterogeneity must be a finite number"),
    "bad rule": ('[rule]\nname = "lion"\n', "rule.name must be one of"),
    "not toml": ("[run\nsteps = 3", "not valid TOML"),
    "table not a table": ("run = 3\n", "[run] must be a table"),
    "key not in a table": ("steps = 10\n[run]\nruns = 2\n", "steps is not in a table: put it under [run]"),
    "key of two tables not in a table": ("seed = 1\n", "seed is not in a table: put it under [problem] or [run]"),
    "unknown key not in a table": ("stepz = 10\n", "stepz is not in a table: the tables are [problem], [rule], [run]"),
    "zero sync": ("[run]\nsync_every = 0\n", "run.sync_every must be >= 1"),
    "paired not a bool": ("[run]\npaired = 1\n", "run.paired must be of type bool, got 1"),
    "unknown probes": ('[rule]\nprobes = "gaussian"\n', "rule.probes must be one of auto, rademacher, exact"),
}


@pytest.mark.parametrize("case", list(BAD_CONFIGS))
def test_bad_configs_give_one_line_errors(tmp_path, capsys, case):
    text, expected = BAD_CONFIGS[case]
    cfg = tmp_path / "bad.toml"
    cfg.write_text(text)
    out = tmp_path / "never"
    assert main(["simulate", "--config", str(cfg), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and expected in err and "Traceback" not in err
    assert not out.exists()


@pytest.mark.parametrize("argv,expected", [
    (["--config", "/nonexistent/exp.toml"], "config file not found: /nonexistent/exp.toml"),
    (["--gamma", "0"], "run.gamma must be > 0"),
    (["--beta", "-0.5"], "rule.beta must lie in [0, 1)"),
    (["--e", "0"], "rule.e must be > 0"),
    (["--e", "inf"], "rule.e must be > 0 and finite, got inf"),
    (["--gamma", "inf"], "run.gamma must be > 0 and finite, got inf"),
    (["--noise", "nan"], "problem.noise must be a finite number, got nan"),
    (["--problem", "logistic", "--dataset", "/nonexistent.svm"], "/nonexistent.svm"),
])
def test_bad_arguments_give_one_line_errors(tmp_path, capsys, argv, expected):
    assert main(["simulate", *argv, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and expected in err


def test_argparse_errors_exit_nonzero_without_traceback():
    proc = subprocess.run([sys.executable, "-m", "savic_theory", "simulate", "--steps", "ten"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "invalid int value: 'ten'" in proc.stderr and "Traceback" not in proc.stderr


def test_scaling_both_in_a_config_means_what_the_flag_means(tmp_path, capsys):
    """``--scaling`` is settable in the config file, so its value ``both`` is too."""
    from savic_theory.config import resolve

    assert resolve({"run": {"scaling": "both"}})["run"]["scaling"] == ["global", "local"]
    cfg = tmp_path / "c.toml"
    cfg.write_text('[run]\nscaling = "both"\n')
    by_file, by_flag = tmp_path / "file", tmp_path / "flag"
    assert main(["simulate", "--config", str(cfg), *SMALL, "--out", str(by_file)]) == 0
    assert main(["simulate", "--scaling", "both", *SMALL, "--out", str(by_flag)]) == 0
    assert set(json.loads((by_file / "summary.json").read_text())) == {"adam-global", "adam-local"}
    assert (by_file / "history.csv").read_text() == (by_flag / "history.csv").read_text()
    capsys.readouterr()


def _history_of(folder: Path, gamma: str) -> np.ndarray:
    """``history.csv``'s recorded values (dist_sq …) of the grid point with step size ``gamma``,
    as (runs × records, keys), in file order."""
    with (folder / "history.csv").open() as fh:
        rows = [r for r in csv.DictReader(fh) if r["gamma"] == gamma and r["scaling"] == "global"]
    return np.array([[float(r["dist_sq"]), float(r["f_gap"]), float(r["consensus"])] for r in rows])


def test_paired_grid_points_share_the_draws_of_a_single_point(tmp_path):
    """``run.paired``: each grid point's runs get the draws of the same runs of a one-point call,
    so a point's numbers no longer depend on the grid around it. 1e-12 relative: the same
    arithmetic on the same numbers (the batch only changes how many runs share a kernel call)."""
    base = "[problem]\ndim = 4\nclients = 3\nnoise = 0.3\n[run]\nsteps = 30\nruns = 3\nscaling = \"global\"\n"
    for name, extra in (("paired", "gamma = [0.02, 0.03]\npaired = true\n"),
                        ("unpaired", "gamma = [0.02, 0.03]\n"), ("alone", "gamma = 0.03\n")):
        (tmp_path / f"{name}.toml").write_text(base + extra)
        assert main(["simulate", "--config", str(tmp_path / f"{name}.toml"), "--no-progress",
                     "--out", str(tmp_path / name)]) == 0
    alone = _history_of(tmp_path / "alone", "0.03")
    np.testing.assert_allclose(_history_of(tmp_path / "paired", "0.03"), alone, rtol=1e-12)
    assert not np.allclose(_history_of(tmp_path / "unpaired", "0.03"), alone, rtol=1e-3)
    assert "paired = true" in (tmp_path / "paired" / "config.toml").read_text()
    # summary.json: each point's run-by-run difference from the best point, from the same numbers
    points = json.loads((tmp_path / "paired" / "summary.json").read_text())["adam-global"]["points"]
    finals = {g: _history_of(tmp_path / "paired", g).reshape(3, 31, 3)[:, -1, 0] for g in ("0.02", "0.03")}
    best = points[0]["paired_vs_best"]["best_point"]
    other = 1 - best
    diff = finals[("0.02", "0.03")[other]] - finals[("0.02", "0.03")[best]]
    assert points[best]["paired_vs_best"]["dist_sq_diff_mean"] == 0.0
    got = points[other]["paired_vs_best"]
    assert got["pairs"] == 3 and got["best_point"] == best
    np.testing.assert_allclose([got["dist_sq_diff_mean"], got["dist_sq_diff_se"]],
                               [diff.mean(), diff.std(ddof=1) / np.sqrt(3)], rtol=1e-12)
    unpaired = json.loads((tmp_path / "unpaired" / "summary.json").read_text())["adam-global"]["points"]
    assert "paired_vs_best" not in unpaired[0]


def test_probes_option_chooses_the_oasis_statistic(tmp_path):
    """On a dense quadratic the exact Hessian diagonal and Rademacher probes differ; with noise,
    ``auto`` means probes."""
    common = ["--rule", "oasis", "--form", "dense", "--scaling", "global", *SMALL]
    for probes in ("exact", "rademacher", "auto"):
        assert main(["simulate", *common, "--probes", probes, "--out", str(tmp_path / probes)]) == 0
    text = {p: (tmp_path / p / "history.csv").read_text() for p in ("exact", "rademacher", "auto")}
    assert text["auto"] == text["rademacher"] != text["exact"]
    assert 'probes = "exact"' in (tmp_path / "exact" / "config.toml").read_text()


def test_help_documents_every_option_with_default():
    from savic_theory.cli.simulate import _option
    from savic_theory.config import DEFAULTS

    proc = subprocess.run([sys.executable, "-m", "savic_theory", "simulate", "--help"],
                          capture_output=True, text=True, env={"COLUMNS": "200", "PATH": ""})
    assert proc.returncode == 0
    for table, keys in DEFAULTS.items():
        for key, default in keys.items():
            assert _option(table, key) in proc.stdout
            shown = "both" if key == "scaling" else default  # the option's value, not the config list
            assert f"(default: {shown})" in proc.stdout


def test_interrupted_result_folder_leaves_nothing(tmp_path):
    target = tmp_path / "res"
    with pytest.raises(KeyboardInterrupt):
        with atomic_dir(target) as tmp:
            (tmp / "history.csv").write_text("partial")
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []
    with atomic_dir(target) as tmp:
        (tmp / "config.toml").write_text("1")
        (tmp / "summary.json").write_text("{}")
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as tmp:
            (tmp / "config.toml").write_text("2")
            raise RuntimeError("boom")
    assert [p.name for p in tmp_path.iterdir()] == ["res"] and (target / "config.toml").read_text() == "1"
    assert (target / "summary.json").read_text() == "{}"


def test_readme_quotes_the_real_demo_output(tmp_path, capsys):
    """`make demo`'s lines, exactly as the README quotes them (the run is seeded, so exact)."""
    root = Path(__file__).resolve().parent.parent
    assert main(["simulate", "--config", str(root / "configs" / "quickstart.toml"), "--out", str(tmp_path / "qs"),
                 "--no-progress"]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("adam")]
    assert len(lines) == 2
    readme = (root / "README.md").read_text()
    for line in lines:
        assert f"\n{line}\n" in readme, line
