"""`savic simulate`/`savic run` when runs diverge or never synchronise, and after errors.

Such runs end with a status, not a crash or a flood of NaN rows: history.csv stops a run's rows
at its divergence, summary.json names each run's status, and an error before any block finished
leaves no hidden work folder behind.
"""
from __future__ import annotations

import csv
import json
import re

import numpy as np
import pytest

from savic_theory import experiment
from savic_theory.cli import main

SMALL = ["--dim", "4", "--clients", "3", "--steps", "40", "--runs", "2", "--no-progress"]
DRIFT_HEADER = "rule,scaling,gamma,sync_every,beta,e,run,sync_step,drift,drift_min\n"


def rows(path):
    with path.open() as fh:
        return list(csv.DictReader(fh))


def leftovers(folder, *keep):
    """Names in ``folder`` besides ``keep`` (a hidden work folder would be one)."""
    return sorted(p.name for p in folder.iterdir() if p.name not in keep)


@pytest.mark.parametrize("argv", [["--gamma", "1e6"], ["--gamma", "1e6", "--runs", "1", "--scaling", "global"]],
                         ids=["batched", "one run"])
def test_runs_that_all_diverge_before_the_first_sync_finish(tmp_path, capsys, argv):
    out = tmp_path / "o"
    assert main(["simulate", *SMALL, "--sync-every", "10", *argv, "--out", str(out)]) == 0
    runs = int(argv[argv.index("--runs") + 1]) if "--runs" in argv else 2
    lines = capsys.readouterr().out.splitlines()
    assert lines and all(f"(all {runs} runs diverged)" in ln and "no sync" in ln for ln in lines)
    assert (out / "drift.csv").read_text() == DRIFT_HEADER
    summary = json.loads((out / "summary.json").read_text())
    for block in summary.values():
        (point,) = block["points"]
        assert point["diverged"] == runs and point["status"] == ["diverged"] * runs
        assert all(isinstance(t, int) and 0 < t < 10 for t in point["diverged_at"])
    assert leftovers(tmp_path, "o") == []


def test_a_sync_period_longer_than_the_run(tmp_path, capsys):
    out = tmp_path / "o"
    assert main(["simulate", *SMALL, "--sync-every", "100", "--out", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and all("0 diverged" in ln and "no sync, no drift" in ln for ln in lines)
    assert (out / "drift.csv").read_text() == DRIFT_HEADER
    assert len(rows(out / "history.csv")) == 2 * 2 * 41  # every run is recorded to the end
    assert leftovers(tmp_path, "o") == []


DIVERGING_GRID = """
[problem]
dim = 4
clients = 3
[rule]
name = "identity"
[run]
gamma = [0.05, 100]
sync_every = 1
steps = 60
runs = 2
scaling = ["global", "local"]
"""


def test_a_diverged_runs_history_stops_at_its_divergence(tmp_path, capsys):
    cfg = tmp_path / "g.toml"
    cfg.write_text(DIVERGING_GRID)
    out = tmp_path / "o"
    assert main(["run", str(cfg), "--no-progress", "--out", str(out)]) == 0
    assert "nan" not in (out / "history.csv").read_text().lower()
    history = rows(out / "history.csv")
    summary = json.loads((out / "summary.json").read_text())
    for key, block in summary.items():
        rule, scaling = key.split("-")
        for point in block["points"]:
            for run, (status, at) in enumerate(zip(point["status"], point["diverged_at"])):
                steps = [int(r["step"]) for r in history if (r["rule"], r["scaling"], float(r["gamma"]), int(r["run"]))
                         == (rule, scaling, point["gamma"], run)]
                if point["gamma"] == 100:
                    assert status == "diverged" and at is not None and steps == list(range(at))
                else:
                    assert status == "ok" and at is None and steps == list(range(61))
    assert "(all 2 runs diverged)" in capsys.readouterr().out


def test_a_diverged_runs_drift_rows_stop_where_its_history_does(tmp_path, capsys):
    """As history.csv, drift.csv has rows only for steps before ``diverged_at``: the sync at the
    step where the divergence was detected was kept before (identity, γ = 3, H = 5: at t = 30)."""
    cfg = tmp_path / "div.toml"
    cfg.write_text('[problem]\ndim = 5\nclients = 3\n[rule]\nname = "identity"\n'
                   "[run]\ngamma = [0.5, 3.0]\nsteps = 60\nsync_every = 5\nruns = 3\n")
    out = tmp_path / "o"
    assert main(["run", str(cfg), "--no-progress", "--out", str(out)]) == 0
    history, drift = rows(out / "history.csv"), rows(out / "drift.csv")
    summary = json.loads((out / "summary.json").read_text())
    diverged = 0
    for key, block in summary.items():
        rule, scaling = key.split("-")
        for point in block["points"]:
            for run, at in enumerate(point["diverged_at"]):
                def steps(table, column):
                    return [int(r[column]) for r in table if (r["rule"], r["scaling"], float(r["gamma"]),
                                                              int(r["run"])) == (rule, scaling, point["gamma"], run)]
                end = 61 if at is None else at
                assert steps(history, "step") == list(range(end))
                assert steps(drift, "sync_step") == list(range(5, end, 5))
                diverged += at is not None and at % 5 == 0  # a sync at the divergence step: the case at stake
    assert diverged == 6  # γ = 3: all runs of both scalings
    capsys.readouterr()


def test_the_plot_shows_runs_that_all_diverged_at_once(tmp_path):
    """With every run diverged after the first record, each curve has one finite point: a plain
    line draws nothing and the x-axis collapses onto it. Markers, 0..T and a marked divergence."""
    import matplotlib.pyplot as plt

    from savic_theory import plotting, rules, simulate
    from savic_theory.problems import Quadratic

    prob = Quadratic.random(3, 2, L=1.0, mu=0.05, heterogeneity=1.0, noise=0.01, seed=0)
    res = simulate(prob, rules.make("adam", beta=0.99, e=0.01), gamma=1e300, steps=50, runs=2)
    assert np.all(res.diverged_at > 0) and res.steps[-1] < 50  # the records stop early
    fig = plotting._figure({"adam global": res})
    try:
        ax1, ax2 = fig.axes
        for ax in (ax1, ax2):
            lo, hi = ax.get_xlim()
            assert lo <= 0 and hi >= 50
            points = [ln for ln in ax.get_lines() if np.count_nonzero(np.isfinite(ln.get_ydata())) == 1]
            assert points and all(ln.get_marker() not in (None, "", " ", "None") for ln in points)
        t = int(res.diverged_at.max())
        assert [x.get_text().strip() for x in ax1.texts] == [f"all runs diverged at t = {t}"]
        assert any(list(ln.get_xdata()) == [t, t] for ln in ax1.get_lines())  # the vertical line
    finally:
        plt.close(fig)
    plotting.plot_scalings({"adam global": res}, tmp_path / "p.png")
    assert (tmp_path / "p.png").stat().st_size > 0


SPREAD_GRID = """
[problem]
dim = 4
clients = 3
[rule]
name = "rmsprop"
beta = 0.9
e = 0.01
[run]
gamma = [0.01, 0.3]
sync_every = 5
steps = 60
runs = 2
scaling = "local"
"""


def test_each_grid_line_summarises_its_own_runs(tmp_path, capsys):
    cfg = tmp_path / "g.toml"
    cfg.write_text(SPREAD_GRID)
    out = tmp_path / "o"
    assert main(["run", str(cfg), "--no-progress", "--out", str(out)]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("rmsprop")]
    history = rows(out / "history.csv")
    drift = rows(out / "drift.csv")
    shown = set()
    for gamma, line in zip((0.01, 0.3), lines):
        assert f"gamma={gamma:g} " in line
        mine = [r for r in history if float(r["gamma"]) == gamma]
        alpha, Gamma = (float(re.search(rf"{name} ([0-9.e+-]+)", line).group(1)) for name in ("min α̂", "max Γ̂"))
        assert alpha == float(f"{min(float(r['alpha_hat']) for r in mine):.3g}")
        assert Gamma == float(f"{max(float(r['Gamma_hat']) for r in mine):.3g}")
        top = max(float(r["drift"]) for r in drift if float(r["gamma"]) == gamma)
        assert f"over runs and syncs max drift {top:.4f}" in line
        shown.add(Gamma)
    assert len(shown) == 2  # the grid points differ, so must their lines


@pytest.mark.parametrize("argv,expected", [
    (["--problem", "logistic", "--dataset", "{bad}"], "cannot read LIBSVM file"),
    (["--problem", "logistic", "--dataset", "digits", "--clients", "100000"], "exceeds the number of rows"),
])
def test_errors_before_any_block_leave_nothing(tmp_path, capsys, argv, expected):
    bad = tmp_path / "bad.svm"
    bad.write_text("garbage line\n")
    argv = [a.format(bad=bad) for a in argv]
    assert main(["simulate", *argv, "--no-progress", "--out", str(tmp_path / "o")]) == 2
    assert expected in capsys.readouterr().err
    assert leftovers(tmp_path, "bad.svm") == []


def test_an_error_in_a_block_keeps_only_finished_blocks(tmp_path, capsys, monkeypatch):
    real = experiment._run_block
    calls = []

    def fail_at(n):
        def run_block(problem, block, cfg, progress):
            calls.append(block.key)
            if len(calls) == n:
                raise ValueError("the block failed")
            return real(problem, block, cfg, progress)
        return run_block

    monkeypatch.setattr(experiment, "_run_block", fail_at(1))
    assert main(["simulate", *SMALL, "--out", str(tmp_path / "o")]) == 2
    assert "the block failed" in capsys.readouterr().err
    assert leftovers(tmp_path) == []

    calls.clear()
    monkeypatch.setattr(experiment, "_run_block", fail_at(2))
    assert main(["simulate", *SMALL, "--out", str(tmp_path / "o")]) == 2
    assert leftovers(tmp_path) == [".o.work"]  # the finished block is kept for --resume
    calls.clear()
    monkeypatch.setattr(experiment, "_run_block", fail_at(0))
    assert main(["simulate", *SMALL, "--resume", "--out", str(tmp_path / "o")]) == 0
    assert calls == ["adam-local"] and leftovers(tmp_path) == ["o"]


def test_scaling_help_shows_its_default_as_an_option_value():
    from savic_theory.cli import build_parser

    text = " ".join(build_parser().commands.choices["simulate"].format_help().split())
    assert "[--scaling {global,local,both}]" in text
    assert "each with --runs runs (default: both)" in text
    assert "['global', 'local']" not in text and "one run each" not in text



@pytest.mark.parametrize("argv", [
    ["--gamma", "0.5", "--e", "0.01", "--steps", "300", "--runs", "4", "--scaling", "global"],
    ["--gamma", "2.2", "--e", "0.01", "--sync-every", "5", "--steps", "300", "--runs", "3", "--scaling", "global"],
], ids=["all runs diverge at a sync", "one run diverges at a sync"])
def test_the_printed_max_drift_is_that_of_drift_csv(tmp_path, capsys, argv):
    """The console line leaves out the syncs at and after a run's ``diverged_at``, as drift.csv does
    (adam's D̂ jumps by a factor of 10⁵ and more at the sync where its run diverges)."""
    out = tmp_path / "o"
    assert main(["simulate", *argv, "--no-progress", "--out", str(out)]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    summary = json.loads((out / "summary.json").read_text())
    (point,) = summary["adam-global"]["points"]
    assert point["diverged"] > 0
    drift = [float(r["drift"]) for r in rows(out / "drift.csv")]
    if point["diverged"] == point["runs"]:
        assert drift == [] and "max drift" not in line and "no sync before a divergence, no drift" in line
    else:
        assert f"over runs and syncs max drift {max(drift):.4f}" in line
