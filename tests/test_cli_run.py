"""`savic run`: grids expanded into batched calls, interruption and --resume."""
from __future__ import annotations

import json
import tomllib

import numpy as np
import pytest

from savic_theory import experiment, rules, simulate
from savic_theory.cli import main
from savic_theory.config import build_problem, resolve

from .test_cli_output import _block_raises

GRID = """
[problem]
dim = 4
clients = 3
noise = 0.0
[rule]
name = ["rmsprop", "identity"]
beta = [0.9, 0.99]
[run]
gamma = [0.02, 0.05]
sync_every = [1, 4]
steps = 30
runs = 2
scaling = ["global", "local"]
"""


@pytest.fixture
def grid_file(tmp_path):
    path = tmp_path / "grid.toml"
    path.write_text(GRID)
    return path


def test_grid_is_one_batched_call_per_block(grid_file, tmp_path):
    out = tmp_path / "out"
    assert main(["run", str(grid_file), "--no-progress", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary) == ["rmsprop-global", "rmsprop-local", "identity-global", "identity-local"]
    assert len(summary["rmsprop-global"]["points"]) == 8  # 2 γ × 2 H × 2 β
    assert len(summary["identity-local"]["points"]) == 4  # identity has no β


def test_console_shows_the_first_20_grid_points_as_the_help_says(grid_file, tmp_path, capsys):
    from savic_theory.cli import simulate as simulate_cli

    assert "the first 20" in " ".join(simulate_cli.__doc__.split())
    assert main(["run", str(grid_file), "--no-progress", "--out", str(tmp_path / "out")]) == 0
    lines = capsys.readouterr().out.splitlines()  # 24 grid points over the four blocks
    assert len(lines) == 21 and all("‖x̄−x*‖²" in line for line in lines[:20])
    assert lines[20] == "... (more grid points in summary.json)"


def test_grid_point_equals_a_separate_simulate_call(tmp_path, grid_file):
    from savic_theory.config import load_config

    cfg = resolve(load_config(grid_file))
    results = experiment.run_experiment(cfg, tmp_path / "o", progress=False)
    block = experiment.expand(cfg)[0]  # rmsprop, global
    res = results[block.key]
    prob = build_problem(cfg)
    i = block.points.index({"gamma": 0.05, "sync_every": 4, "beta": 0.99, "e": 0.01})
    single = simulate(prob, rules.rmsprop(beta=0.99, e=0.01), gamma=0.05, steps=30, sync_every=4)
    assert res.x.shape == (16, 3, 4)
    for seed_run in (2 * i, 2 * i + 1):  # noise-free: both runs of the point equal the single call
        np.testing.assert_allclose(res.x[seed_run], single.x, rtol=1e-12)


def test_a_grid_points_runs_share_their_blocks_random_stream(tmp_path):
    """What the docs state (and no more): a block is one call seeded with run.seed whose grid
    points draw from one stream, so the same config gives the same numbers, but a point run alone
    gets other draws (its runs are not a function of the point)."""
    cfg = resolve({"problem": {"dim": 3, "clients": 2}, "rule": {"name": "adam", "beta": [0.9, 0.99]},
                   "run": {"steps": 20, "runs": 2, "scaling": "global", "seed": 3}})
    res = experiment.run_experiment(cfg, tmp_path / "a", progress=False)["adam-global"]
    again = experiment.run_experiment(cfg, tmp_path / "b", progress=False)["adam-global"]
    np.testing.assert_array_equal(res.x, again.x)
    prob = build_problem(cfg)
    batch = simulate(prob, rules.make("adam", beta=np.repeat([0.9, 0.99], 2), e=0.01), gamma=0.05, steps=20,
                     sync_every=10, runs=4, seed=3)
    np.testing.assert_array_equal(res.x, batch.x)  # the block's one call, points major
    alone = simulate(prob, rules.make("adam", beta=0.99, e=0.01), gamma=0.05, steps=20, sync_every=10, runs=2, seed=3)
    assert not np.allclose(res.x[2:], alone.x)
    assert "not paired" in " ".join(experiment.__doc__.split())


def test_interrupted_run_resumes_identically(grid_file, tmp_path, monkeypatch):
    full = tmp_path / "full"
    assert main(["run", str(grid_file), "--no-progress", "--out", str(full)]) == 0

    out = tmp_path / "resumed"
    real = experiment._run_block
    calls = []

    def interrupt_third(problem, block, cfg, progress):
        calls.append(block.key)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(problem, block, cfg, progress)

    monkeypatch.setattr(experiment, "_run_block", interrupt_third)
    assert main(["run", str(grid_file), "--no-progress", "--out", str(out)]) == 130
    assert not out.exists()  # no half-written result folder
    monkeypatch.setattr(experiment, "_run_block", lambda *a: calls.append(a[1].key) or real(*a))
    calls.clear()
    assert main(["run", str(grid_file), "--no-progress", "--resume", "--out", str(out)]) == 0
    assert calls == ["identity-global", "identity-local"]  # the two finished blocks were reused
    for name in ("history.csv", "drift.csv"):
        assert (out / name).read_text() == (full / name).read_text()
    assert not (tmp_path / ".resumed.work").exists()


def test_resume_refuses_a_different_config(grid_file, tmp_path, monkeypatch, capsys):
    out = tmp_path / "o"
    _block_raises(monkeypatch, KeyboardInterrupt)  # one block finishes: there is something to resume
    assert main(["run", str(grid_file), "--no-progress", "--out", str(out)]) == 130
    assert main(["run", str(grid_file), "--steps", "31", "--resume", "--no-progress", "--out", str(out)]) == 2
    assert "different config" in capsys.readouterr().err


def test_nothing_to_resume(grid_file, tmp_path, capsys):
    assert main(["run", str(grid_file), "--resume", "--out", str(tmp_path / "none")]) == 2
    assert "nothing to resume" in capsys.readouterr().err


@pytest.mark.parametrize("text,expected", [
    ("[problem]\ndim = [3, 4]\n", "problem.dim takes one value"),
    ("[run]\ngamma = []\n", "empty grid"),
    ("[run]\ngamma = [0.1, 0.1]\n", "lists a value twice"),
    ("[run]\ngamma = [0.1, -1]\n", "run.gamma must be > 0"),
])
def test_bad_grids(tmp_path, capsys, text, expected):
    cfg = tmp_path / "g.toml"
    cfg.write_text(text)
    assert main(["run", str(cfg), "--out", str(tmp_path / "o")]) == 2
    assert expected in capsys.readouterr().err


@pytest.mark.parametrize("key,table", [("e", "rule"), ("gamma", "run")])
def test_an_infinite_value_is_refused_before_any_block_runs(tmp_path, capsys, monkeypatch, key, table):
    """inf passed ``> 0``: the rule refused it only in its own block, after the others had run,
    and the message then offered a --resume that could never succeed."""
    cfg = tmp_path / "inf.toml"
    tables = {"rule": 'name = ["identity", "adam"]\n', "run": "steps = 5\nruns = 1\n"}
    tables[table] += f"{key} = inf\n"
    cfg.write_text("[problem]\ndim = 3\nclients = 2\n" + "".join(f"[{t}]\n{v}" for t, v in tables.items()))
    ran = []
    monkeypatch.setattr(experiment, "_run_block", lambda *a, **k: ran.append(a))
    assert main(["run", str(cfg), "--no-progress", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"savic run: error: {table}.{key} must be > 0 and finite, got inf"
    assert ran == [] and sorted(p.name for p in tmp_path.iterdir()) == ["inf.toml"]


def test_a_large_grid_plots_each_blocks_best_point(grid_file, tmp_path, monkeypatch):
    """Over 12 curves the plot shows, per rule and scaling, the grid point with the lowest final
    mean ‖x̄ − x*‖² (it used to pool every point of a block, mixing step sizes and periods)."""
    import savic_theory.plotting as plotting

    seen = {}
    monkeypatch.setattr(plotting, "plot_scalings", lambda curves, path, title="": seen.update(curves=curves, title=title))
    out = tmp_path / "out"
    assert main(["run", str(grid_file), "--no-progress", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert "lowest final mean" in seen["title"] and len(seen["curves"]) == len(summary) == 4
    for label, (res, runs) in seen["curves"].items():
        key = "-".join(label.split(":")[0].split())  # "rmsprop global: ..." -> "rmsprop-global"
        best = min(p["final"]["dist_sq"]["mean"] for p in summary[key]["points"])
        assert np.mean(res.history["dist_sq"][-1, runs]) == pytest.approx(best, rel=1e-12)
        assert "gamma=" in label and "sync_every=" in label


def test_a_libsvm_path_in_a_config_is_taken_from_the_config_files_folder(tmp_path, monkeypatch, capsys):
    """``dataset = "d.svm"`` beside the config works from any working directory, and the written
    config.toml holds the absolute path, so it reruns from anywhere."""
    exp = tmp_path / "exp"
    exp.mkdir()
    rows = ["+1 1:0.5 2:1.0", "-1 1:-0.3 2:0.2", "+1 1:1.5 2:-1.0", "-1 1:-1.1 2:0.4",
            "+1 1:0.7 2:0.1", "-1 1:-0.2 2:-0.9", "+1 1:0.3 2:0.8", "-1 1:-0.8 2:-0.1"]
    (exp / "d.svm").write_text("\n".join(rows) + "\n")
    (exp / "l.toml").write_text('[problem]\nkind = "logistic"\ndataset = "d.svm"\nclients = 2\nsplit = "iid"\n'
                                'batch_size = 2\n[rule]\nname = "identity"\n[run]\nsteps = 4\nruns = 1\n'
                                'scaling = "global"\n')
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert main(["run", str(exp / "l.toml"), "--out", "res", "--no-progress"]) == 0
    written = tomllib.loads((elsewhere / "res" / "config.toml").read_text())
    assert written["problem"]["dataset"] == str((exp / "d.svm").resolve())
    monkeypatch.chdir(tmp_path)
    assert main(["run", str(elsewhere / "res" / "config.toml"), "--out", "again", "--no-progress"]) == 0
    capsys.readouterr()
