"""torch.distributed on CPU: two gloo processes started by torchrun reproduce the single-process run."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib

import numpy as np
import pytest

torch = pytest.importorskip("torch")
dist = pytest.importorskip("torch.distributed")

from savic_theory.nn import NNConfig, run_experiment  # noqa: E402

if not dist.is_available() or not dist.is_gloo_available():  # pragma: no cover - torch built without gloo
    pytest.skip("torch.distributed with gloo is not available", allow_module_level=True)

# 4 clients over 2 processes: each process computes a group of 2 clients with vmap
CONFIG = """
[data]
dataset = "synthetic"
clients = 4
splits = ["dirichlet"]
alpha = 0.5
batch_size = 4
synthetic_train = 48
synthetic_test = 18
synthetic_classes = 3
synthetic_size = 16
train_eval_size = 21
[model]
width = 2
norm_groups = 2
[train]
rounds = 2
local_steps = 2
seeds = [0]
methods = ["adam-global", "oasis-local"]
device = "cpu"
precision = "fp64"
keep_checkpoints = true
threads = 1
[method.adam]
gamma = 0.002
beta = 0.9
[method.oasis]
gamma = 0.002
beta = 0.9
e = 0.01
"""

# Both runs do the same float64 arithmetic except for summation order: a vmap over 2 clients
# against one over 4, sums over clients split between processes, test and training
# evaluations summed per process. That is ~1e-16 per operation; the Hessian probes of OASIS
# amplify it in small entries (see tests/test_nn.py::assert_close), so parameters and metrics
# must agree to 1e-8 relative (plus 1e-10 of the largest entry for arrays). Seen on a 2-core
# x86 machine: 6e-15 for the metrics, 4e-15 for the parameters, relative.
RTOL = 1e-8


def test_two_gloo_processes_match_the_single_process_run(tmp_path):
    cfg_path = tmp_path / "dist.toml"
    cfg_path.write_text(CONFIG)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
           "-m", "savic_theory", "nn", str(cfg_path), "--out", str(tmp_path / "dist"), "--no-progress"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-8000:]
    assert proc.stdout.count("done after 2 rounds") == 2  # only process 0 reports

    old = torch.get_num_threads()
    try:
        run_experiment(NNConfig.from_dict(tomllib.loads(CONFIG)), tmp_path / "single", progress=False)
    finally:
        torch.set_num_threads(old)

    for method in ("adam-global", "oasis-local"):
        run = f"runs/dirichlet/{method}/seed0"
        h_dist = json.loads((tmp_path / "dist" / run / "history.json").read_text())["history"]
        h_one = json.loads((tmp_path / "single" / run / "history.json").read_text())["history"]
        assert [r["round"] for r in h_dist] == [r["round"] for r in h_one] == [0, 1, 2]
        for a, b in zip(h_dist, h_one):
            for key in ("batch_loss", "train_loss", "test_loss", "test_acc", "alpha_hat", "Gamma_hat",
                        "drift", "drift_min", "consensus"):
                if b[key] is None:  # NaN (round 0's batch_loss and drift) is null in the JSON
                    assert a[key] is None, (method, key)
                    continue
                assert a[key] == pytest.approx(b[key], rel=RTOL, abs=1e-14), (method, key)
        c_dist = torch.load(tmp_path / "dist" / run / "checkpoint.pt", weights_only=True)
        c_one = torch.load(tmp_path / "single" / run / "checkpoint.pt", weights_only=True)
        pairs = [(c_dist["x"], c_one["x"])] + [(c_dist["state"][k], c_one["state"][k]) for k in c_one["state"]]
        for got, want in pairs:
            got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
            assert got.shape == want.shape
            np.testing.assert_allclose(got, want, rtol=RTOL, atol=1e-10 * float(np.max(np.abs(want))))
        # the client generators continue from the same states whatever the layout
        assert all(torch.equal(a, b) for a, b in zip(c_dist["generators"], c_one["generators"]))
        assert c_dist["k"] == c_one["k"] and c_dist["round"] == c_one["round"] == 2


# Process 1 alone fails in round 2 (as out of memory would): a sitecustomize on its path
# patches Trainer.run_round when the runner is imported.
_FAIL_ON_RANK_1 = '''
import os, sys, importlib.abc
if os.environ.get("RANK") == "1":
    class _Finder(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name == "savic_theory.nn.runner":
                sys.meta_path.remove(self)
                from savic_theory.nn import engine
                plain = engine.Trainer.run_round
                def run_round(self):
                    if self.round == 1:
                        raise {"MemoryError": MemoryError, "ValueError": ValueError}[os.environ["FAIL_WITH"]](
                            "made to fail on process 1")
                    return plain(self)
                engine.Trainer.run_round = run_round
            return None
    sys.meta_path.insert(0, _Finder())
'''


def _torchrun(tmp_path, *args, env=None):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
           "-m", "savic_theory", "nn", *args, "--no-progress"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})


@pytest.mark.parametrize("error", ["MemoryError", "ValueError"])
def test_an_error_on_one_process_ends_the_job_with_its_message(tmp_path, error):
    """No process waits for one that failed: the failing one says why (also an error of a kind
    that every process would meet alike, printed once per machine when it is), the others that
    it stopped, unless torchrun ends them first."""
    (tmp_path / "inject").mkdir()
    (tmp_path / "inject" / "sitecustomize.py").write_text(_FAIL_ON_RANK_1)
    cfg_path = tmp_path / "dist.toml"
    cfg_path.write_text(CONFIG)
    path = os.pathsep.join([str(tmp_path / "inject"), os.environ.get("PYTHONPATH", "")])
    proc = _torchrun(tmp_path, str(cfg_path), "--out", str(tmp_path / "out"),
                     env={"PYTHONPATH": path, "FAIL_WITH": error})
    assert proc.returncode != 0
    said = {"MemoryError": "out of memory (made to fail on process 1)", "ValueError": "made to fail on process 1"}
    assert f"savic nn (process 1 of 2): error: {said[error]}" in proc.stderr, proc.stderr[-4000:]
    assert "internal error" not in proc.stderr, proc.stderr[-4000:]
    others = [line for line in proc.stderr.splitlines() if line.startswith("savic nn: error:")]
    # gloo's words, without its source location: "Connection closed by peer [127.0.0.1]:6882", say
    assert all(re.match(r"savic nn: error: another process of this job stopped \(its own message says why; "
                        r"here: [^\[\s][^;]*\); --resume continues", line) for line in others), others


def test_report_error_under_torchrun_is_one_line_not_a_hang(tmp_path):
    cfg_path = tmp_path / "dist.toml"
    cfg_path.write_text(CONFIG)
    proc = _torchrun(tmp_path, str(cfg_path), "--out", str(tmp_path / "nothing"), "--report")
    assert proc.returncode != 0
    assert f"savic nn: error: {tmp_path / 'nothing'} holds no experiment (no config.toml) to report on" in proc.stderr
