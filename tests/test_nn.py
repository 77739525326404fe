"""The ResNet18 harness on CPU at tiny scale: shapes, rule semantics, resume, data readers, CLI."""
from __future__ import annotations

import gzip
import io
import json
import math
import pickle
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from savic_theory import Quadratic, rules, simulate  # noqa: E402
from savic_theory.cli import main  # noqa: E402
from savic_theory.nn import (METHOD_NAMES, DeviceData, NNConfig, Objective, ParamLayout,  # noqa: E402
                             ResNet18, Trainer, augment, client_parts, init_params, load_cifar10,
                             load_fashion_mnist, make_method, read_idx, run_experiment, synthetic_images)
from savic_theory.nn.config import HELP, METHOD_DEFAULTS, load_nn_config  # noqa: E402
from savic_theory.nn.model import _stream_seed  # noqa: E402

SCALED = [m for m in METHOD_NAMES if m != "local_sgd"]


def assert_close(actual, desired):
    """Float64 runs of the same arithmetic, up to summation order.

    A batched (vmap) convolution and one client's, or fused multiply-add in ``addcdiv``, sum in
    another order: ~1e-16 relative to the summed magnitudes per operation. Entries produced by
    cancellation (small gradient or Hessian-probe entries next to large ones) inherit that
    error relative to the largest entry, so the bound is ``1e-10 · max|desired|`` plus
    ``1e-8`` relative; the worst seen is 5e-10 absolute against a maximum of 34 (OASIS).
    A semantic slip (a wrong β, an update counted twice, a missed sync) changes values by at
    least ``1 − β ≥ 0.01`` relatively, many orders of magnitude above this.
    """
    actual, desired = np.asarray(actual, dtype=np.float64), np.asarray(desired, dtype=np.float64)
    scale = float(np.max(np.abs(desired))) if desired.size else 0.0
    np.testing.assert_allclose(actual, desired, rtol=1e-8, atol=1e-10 * scale)



@pytest.fixture(autouse=True, scope="module")
def two_threads():
    old = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: one thread is fastest and immune to busy cores
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def tiny():
    """A tiny ResNet18 (width 2) and 16×16 synthetic images over 3 heterogeneous clients."""
    s = synthetic_images(48, 24, classes=4, size=16, seed=1)
    parts = client_parts(s.train_y, 3, "dirichlet", alpha=0.5, seed=0)
    data = DeviceData(s.train_x, s.train_y, parts, s.test_x, s.test_y, augment=True, train_eval_size=24)
    net = ResNet18(classes=4, width=2)
    return net, data


def trainer(net, data, name, *, dtype=torch.float64, together="vmap", H=2, batch=4, seed=0, beta=0.8,
            gamma=None, e=1e-3, wd=1e-3):
    gamma = gamma or (0.05 if name == "local_sgd" else 1e-3)
    method = make_method(name, gamma, beta=beta, e=e)
    obj = Objective(net, weight_decay=wd, precision="fp64" if dtype == torch.float64 else "fp32")
    return Trainer(obj, data, method, init_params(net, 3, dtype), local_steps=H, batch_size=batch, seed=seed,
                   together=together, dtype=dtype)


# ------------------------------------------------------------------------------ model
def test_resnet18_is_the_standard_network():
    net = ResNet18(classes=10, width=64)
    # the CIFAR ResNet18 (3×3 stem, no max-pool) has 11,173,962 parameters; GroupNorm has the
    # same affine parameters as BatchNorm
    assert ParamLayout(net).size == 11_173_962
    assert not list(net.buffers())
    assert ResNet18(classes=10, width=4, in_channels=1)(torch.zeros(2, 1, 32, 32)).shape == (2, 10)
    out = ResNet18(classes=3, width=4, norm="batch")(torch.randn(5, 3, 32, 32))
    assert out.shape == (5, 3) and torch.isfinite(out).all()


def test_param_layout_round_trip_and_seeded_init():
    net = ResNet18(classes=4, width=2)
    layout = ParamLayout(net)
    x = init_params(net, 5)
    back = layout.flatten(layout.unflatten(x))
    assert torch.equal(back, x) and x.shape == (layout.size,)
    assert torch.equal(init_params(net, 5), x) and not torch.equal(init_params(net, 6), x)
    with pytest.raises(ValueError, match="buffers"):
        ParamLayout(torch.nn.BatchNorm2d(3))
    with pytest.raises(ValueError, match="width"):
        ResNet18(width=0)
    with pytest.raises(ValueError, match="norm"):
        ResNet18(norm="layer")


# ------------------------------------------------------------------------------ one round vs the rule code
def _reference_round(net, data, name, x0, *, H, batch, seed, gamma, beta, e, wd):
    """SAVIC for one round written out with NumPy and the rule functions of savic_theory.rules.

    Gradients and Hessian probes come from the same Objective on the same minibatches, one
    client at a time; everything the method does with them (initial statistic, steps, sync,
    state updates, clip) is the simulator's rule code on NumPy arrays.
    """
    rule_name, scaling = (("identity", "global") if name == "local_sgd" else name.rsplit("-", 1))
    rule = rules.make(rule_name) if rule_name == "identity" else rules.make(rule_name, beta=beta, e=e)
    obj = Objective(net, weight_decay=wd, precision="fp64")
    M, P = data.n_clients, obj.layout.size
    gens = [torch.Generator().manual_seed(_stream_seed(seed, 1, m)) for m in range(M)]
    x = np.tile(x0.numpy(), (M, 1))

    def client_stats(with_stat):
        xb, yb = data.client_batch(range(M), gens, batch, torch.float64)
        g, s = np.zeros((M, P)), np.zeros((M, P))
        probes = None
        if with_stat and rule.statistic is rules.Statistic.HESSIAN_PROBE:
            probes = [torch.randint(0, 2, (P,), generator=gen).double() * 2 - 1 for gen in gens]
        for m in range(M):
            xm = torch.as_tensor(x[m])
            if probes is None:
                gm, _ = obj.grad(xm, xb[m], yb[m])
                g[m], s[m] = gm.numpy(), (gm * gm).numpy()
            else:
                gm, hz, _ = obj.grad_hvp(xm, xb[m], yb[m], probes[m])
                g[m], s[m] = gm.numpy(), (probes[m] * hz).numpy()
        return g, s

    beta_k = (lambda k: float(rule.beta.values(np.array([k]))[0])) if rule.beta is not None else (lambda k: 0.0)
    if rule.is_static:
        D = np.ones((1, P))
    else:
        _, s0 = client_stats(True)
        s0 = s0 if scaling == "local" else s0.mean(axis=0, keepdims=True)
        k = rule.init_updates
        state = rule.init(s0, beta_k(1), np)
        D = rules.clip(rule.diagonal(state, np), rule.e, np)
    for h in range(H):
        with_stat = not rule.is_static and (scaling == "local" or h == H - 1)
        g, s = client_stats(with_stat)
        x = x - gamma * g / D
        if with_stat and scaling == "local":
            k += 1
            state = rule.update(state, s, beta_k(k), np)
            D = rules.clip(rule.diagonal(state, np), rule.e, np)
    x = np.tile(x.mean(axis=0), (M, 1))
    if not rule.is_static and scaling == "global":
        k += 1
        state = rule.update(state, s.mean(axis=0, keepdims=True), beta_k(k), np)
        D = rules.clip(rule.diagonal(state, np), rule.e, np)
    return x, D


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_one_round_matches_the_rule_code(tiny, name):
    net, data = tiny
    kw = dict(H=2, batch=4, seed=7, gamma=0.05 if name == "local_sgd" else 1e-3, beta=0.8, e=1e-3, wd=1e-3)
    tr = trainer(net, data, name, H=kw["H"], batch=kw["batch"], seed=kw["seed"], gamma=kw["gamma"],
                 beta=kw["beta"], e=kw["e"], wd=kw["wd"])
    x0 = tr.x[0].clone()
    tr.run_round()
    x_ref, D_ref = _reference_round(net, data, name, x0, **kw)
    assert_close(tr.x.numpy(), x_ref)
    assert_close(np.broadcast_to(tr.D.numpy(), D_ref.shape), D_ref)
    assert not np.allclose(x_ref[0], x0.numpy())  # the round moved the parameters


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_matches_simulate_on_a_diagonal_quadratic(name):
    """A linear model with squared loss on orthogonal rows is the simulator's diagonal quadratic
    ``f_m = ½ xᵀ diag(a_m) x − b_mᵀ x``; full batches make both deterministic, and Hutchinson
    probes are exact for a diagonal Hessian, so the harness must reproduce simulate()."""
    M, d, H, rounds = 3, 4, 3, 4
    rng = np.random.default_rng(0)
    a = rng.uniform(0.5, 2.0, (M, d))
    b = rng.standard_normal((M, d))
    # rows sqrt(d a_mj) e_j: XᵀX/d = diag(a_m); targets with Xᵀy/d = b_m
    X = np.concatenate([np.diag(np.sqrt(d * a[m])) for m in range(M)])
    y = np.concatenate([np.sqrt(d) * b[m] / np.sqrt(a[m]) for m in range(M)])
    parts = [np.arange(m * d, (m + 1) * d) for m in range(M)]
    data = DeviceData(X, y, parts)
    model = torch.nn.Linear(d, 1, bias=False)

    def half_mse(out, target):
        return 0.5 * torch.mean((out[:, 0] - target) ** 2)

    rule_name, scaling = ("identity", "global") if name == "local_sgd" else name.rsplit("-", 1)
    rule = rules.make(rule_name) if rule_name == "identity" else rules.make(rule_name, beta=0.7, e=0.05)
    gamma = 0.1
    obj = Objective(model, loss=half_mse, precision="fp64")
    tr = Trainer(obj, data, make_method(name, gamma, **({} if rule_name == "identity" else dict(beta=0.7, e=0.05))),
                 torch.zeros(d, dtype=torch.float64), local_steps=H, batch_size=0, dtype=torch.float64)
    recs = [tr.run_round() for _ in range(rounds)]
    res = simulate(Quadratic(a, b), rule, gamma, steps=H * rounds, sync_every=H, scaling=scaling)
    assert_close(tr.x[0].numpy(), res.x_bar)
    assert_close(np.broadcast_to(tr.D.numpy(), res.D.shape), res.D)
    assert_close([r["drift"] for r in recs], res.drift)
    at_sync = np.isin(res.steps, res.sync_steps)
    assert_close([r["Gamma_hat"] for r in recs], res.history["Gamma_hat"][at_sync])
    assert_close([r["alpha_hat"] for r in recs], res.history["alpha_hat"][at_sync])


# ------------------------------------------------------------------------------ named equivalences
@pytest.mark.parametrize("rule", ["rmsprop", "adam", "oasis"])
def test_one_client_every_step_global_equals_local(rule):
    """M = 1 and H = 1 ⇒ global = local (docs/algorithm.md), with minibatches, augmentation, probes."""
    s = synthetic_images(16, 8, classes=3, size=8, seed=2)
    data = DeviceData(s.train_x, s.train_y, [np.arange(16)], s.test_x, s.test_y, augment=True)
    net = ResNet18(classes=3, width=2)
    g = trainer(net, data, f"{rule}-global", H=1)
    lo = trainer(net, data, f"{rule}-local", H=1)
    for _ in range(3):
        g.run_round()
        lo.run_round()
    assert_close(g.x.numpy(), lo.x.numpy())
    assert_close(g.D.numpy(), lo.D.numpy())


def test_global_scaling_is_shared_and_local_scaling_is_per_client(tiny):
    net, data = tiny
    g = trainer(net, data, "adam-global")
    lo = trainer(net, data, "adam-local")
    assert g.D.shape == (1, g.P) and lo.D.shape == (data.n_clients, lo.P)
    D_before = g.D.clone()
    g.run_round()
    assert not torch.equal(D_before, g.D)  # updated at the sync
    lo.run_round()
    assert not torch.allclose(lo.D[0], lo.D[1])  # heterogeneous clients keep their own D̂_m
    # after a sync every client holds x̄
    assert torch.equal(lo.x[0], lo.x[1]) and torch.equal(g.x[0], g.x[2])


@pytest.mark.parametrize("name", ["oasis-local", "adam-global"])
def test_vmap_and_loop_agree(tiny, name):
    net, data = tiny
    a = trainer(net, data, name, together="vmap")
    b = trainer(net, data, name, together="loop")
    ra, rb = a.run_round(), b.run_round()
    assert_close(a.x.numpy(), b.x.numpy())
    # the second step sees D̂ entries built from Hessian probes whose small entries carry
    # ~1e-8 relative reassociation error (see assert_close): losses move at that level
    for key in ("batch_loss", "test_acc", "train_loss", "Gamma_hat", "drift", "consensus"):
        assert ra[key] == pytest.approx(rb[key], rel=1e-6, abs=1e-12), key


@pytest.mark.parametrize("name,gamma", [("local_sgd", 0.1), ("oasis-global", 1e-2)])
def test_float32_training_reduces_the_loss(name, gamma):
    s = synthetic_images(96, 48, classes=3, size=16, seed=4)
    data = DeviceData(s.train_x, s.train_y, client_parts(s.train_y, 2, "iid"), s.test_x, s.test_y,
                      train_eval_size=96)
    net = ResNet18(classes=3, width=4, norm_groups=2)
    tr = trainer(net, data, name, dtype=torch.float32, H=3, batch=16, gamma=gamma, beta=0.9, e=0.1, wd=0.0)
    first = tr.initial_metrics()
    for _ in range(6):
        last = tr.run_round()
    # measured: 1.07 -> 0.04 (local_sgd) and 1.07 -> 0.19 (oasis-global) on this easy set
    assert last["train_loss"] < 0.5 * first["train_loss"]
    assert tr.x.dtype == torch.float32 and math.isfinite(last["consensus"])


def test_bf16_autocast_and_channels_last_run_on_cpu(tiny):
    """The GPU settings (bf16 autocast, channels-last batches) through vmap and double backward."""
    net, data = tiny

    def run(precision):
        tr = Trainer(Objective(net, precision=precision), data, make_method("oasis-local", 1e-3, beta=0.9, e=1e-2),
                     init_params(net, 3), local_steps=2, batch_size=4, channels_last=True)
        return tr, tr.run_round()

    tr, rec = run("bf16")
    assert tr.x.dtype == torch.float32 and torch.isfinite(tr.x).all() and torch.isfinite(tr.D).all()
    assert all(math.isfinite(rec[k]) for k in ("batch_loss", "train_loss", "test_loss", "drift"))
    # Against the same round in float32: the losses, which are well conditioned. bf16 keeps 8
    # significant bits (unit round-off 2⁻⁸ ≈ 3.9e-3); measured gaps up to 3.5e-3 here and 5.5e-3
    # over 9 trainer/init seeds, i.e. ~1.4 round-off units, so 2e-2 (5 units, ~4× the worst seen)
    # leaves room for other CPUs' bf16 kernels. The parameters and D̂ are not compared: at width 2
    # the gradient's condition number is ~300 (float32 and float64 gradients differ by 2e-5 ≈ 300
    # float32 units), so bf16 gradients, hence steps and Hessian probes, differ from float32 ones by
    # O(1) (measured 0.9 relative).
    _, ref = run("fp32")
    for key in ("batch_loss", "train_loss", "test_loss"):
        assert rec[key] == pytest.approx(ref[key], rel=2e-2), key
    # channels-last changes strides only: same numbers as the default layout in float64
    plain = trainer(net, data, "adam-global")
    cl = trainer(net, data, "adam-global")
    cl.channels_last = True
    plain.run_round()
    cl.run_round()
    assert_close(cl.x.numpy(), plain.x.numpy())


# ------------------------------------------------------------------------------ resume
@pytest.mark.parametrize("name", ["rmsprop-local", "oasis-global"])
def test_resume_continues_identically(tiny, name):
    net, data = tiny
    straight = trainer(net, data, name, dtype=torch.float32)
    for _ in range(3):
        straight.run_round()
    first = trainer(net, data, name, dtype=torch.float32)
    for _ in range(2):
        first.run_round()
    buf = io.BytesIO()
    torch.save(first.state_dict(), buf)
    buf.seek(0)
    second = trainer(net, data, name, dtype=torch.float32, seed=0)
    second.load_state_dict(torch.load(buf, weights_only=True))
    second.run_round()
    assert torch.equal(second.x, straight.x) and torch.equal(second.D, straight.D)
    timing = ("train_seconds", "eval_seconds", "images_per_second")
    strip = [{k: v for k, v in r.items() if k not in timing} for r in straight.history]
    assert [{k: v for k, v in r.items() if k not in timing} for r in second.history] == strip
    with pytest.raises(ValueError, match="method"):
        trainer(net, data, "adam-local").load_state_dict(first.state_dict())


@pytest.mark.parametrize("name", ["adam-global", "oasis-local"])
def test_a_state_dict_is_a_copy_that_later_rounds_leave_alone(tiny, name):
    """``state_dict()`` copies the training state and ``load_state_dict`` copies the checkpoint:
    before, ``x`` on the CPU was a view of the live parameters, so a state dict kept in memory
    (or a checkpoint loaded into a trainer) changed with the next round."""
    import copy

    net, data = tiny

    def same(a, b):
        if torch.is_tensor(a):
            return torch.equal(a, b)
        if isinstance(a, dict):
            return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
        if isinstance(a, list):
            return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
        return a == b or a != a and b != b  # NaN metrics of round 0 count as equal

    tr = trainer(net, data, name)
    tr.run_round()
    sd = tr.state_dict()
    before = copy.deepcopy(sd)
    tr.run_round()
    tr.history[-1]["test_acc"] = math.nan  # as the runner marks a diverged round
    tr.history[0]["test_acc"] = math.nan
    assert same(sd, before)
    other = trainer(net, data, name)
    other.load_state_dict(sd)
    other.run_round()
    other.history[0]["round"] = -1
    assert same(sd, before)


TINY = """
[data]
dataset = "synthetic"
clients = 2
splits = ["iid", "dirichlet"]
alpha = 0.5
batch_size = 4
synthetic_train = 32
synthetic_test = 16
synthetic_classes = 3
synthetic_size = 8
train_eval_size = 16
[model]
width = 2
[train]
rounds = 3
local_steps = 2
seeds = [0, 1]
methods = ["local_sgd", "adam-local"]
device = "cpu"
precision = "fp32"
[method.adam]
gamma = 0.002
beta = 0.9
e = 1e-6
"""


def test_runner_interrupted_then_resumed_gives_the_same_results(tmp_path):
    cfg = NNConfig.from_dict(__import__("tomllib").loads(TINY))
    run_experiment(cfg, tmp_path / "straight", progress=False)

    def stop(split, method, seed, rec):
        if (split, method, seed, rec["round"]) == ("dirichlet", "adam-local", 0, 2):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_experiment(cfg, tmp_path / "cut", progress=False, on_round=stop)
    assert (tmp_path / "cut/runs/dirichlet/adam-local/seed0/checkpoint.pt").is_file()
    with pytest.raises(ValueError, match="--resume"):
        run_experiment(cfg, tmp_path / "cut", progress=False)
    partial = run_experiment(cfg, tmp_path / "cut", report=True)  # tables from what is there
    assert [r["status"] for r in partial["runs"]].count("done") == 6
    assert {(r["method"], r["status"], r["rounds"]) for r in partial["runs"] if r["status"] != "done"} == {
        ("adam-local", "running", 2)}
    cell = partial["table"]["dirichlet"]["adam-local"]  # the unfinished run stays out of the means
    assert (cell["runs"], cell["unfinished"], cell["diverged"], cell["test_acc"]["n"]) == (1, 1, 0, 0)
    summary = run_experiment(cfg, tmp_path / "cut", progress=False, resume=True)
    assert not (tmp_path / "cut/runs/dirichlet/adam-local/seed0/checkpoint.pt").exists()

    def table(path):
        rows = (path / "results.csv").read_text().splitlines()
        head = rows[0].split(",")
        keep = [i for i, h in enumerate(head) if h not in ("train_seconds", "eval_seconds", "images_per_second")]
        return [[r.split(",")[i] for i in keep] for r in rows]

    assert table(tmp_path / "cut") == table(tmp_path / "straight")
    assert len(table(tmp_path / "cut")) == 1 + 2 * 2 * 2 * 4  # splits × methods × seeds × (rounds + 1)
    assert summary["table"]["iid"]["adam-local"]["test_acc"]["n"] == 2
    assert (tmp_path / "cut/figures/rounds.png").stat().st_size > 0
    assert (tmp_path / "cut/figures/scaling.png").stat().st_size > 0
    other = NNConfig.from_dict({**__import__("tomllib").loads(TINY), "model": {"width": 3}})
    with pytest.raises(ValueError, match="model.width"):
        run_experiment(other, tmp_path / "cut", progress=False, resume=True)


def test_cli_nn_runs_a_config(tmp_path, capsys):
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(TINY.replace('splits = ["iid", "dirichlet"]', 'splits = ["shards"]')
                   .replace("seeds = [0, 1]", "seeds = [0]").replace("rounds = 3", "rounds = 1"))
    out = tmp_path / "out"
    assert main(["nn", str(cfg), "--out", str(out), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "shards/adam-local/seed0: done after 1 rounds" in text
    hist = json.loads((out / "runs/shards/local_sgd/seed0/history.json").read_text())
    assert hist["status"] == "done" and [r["round"] for r in hist["history"]] == [0, 1]
    assert main(["nn", str(cfg), "--out", str(out), "--no-progress"]) == 2
    assert "--resume" in capsys.readouterr().err
    bad = tmp_path / "bad.toml"
    bad.write_text("[train]\nlocal_stepz = 3\n")
    assert main(["nn", str(bad), "--out", str(tmp_path / "o2")]) == 2
    assert "train.local_stepz" in capsys.readouterr().err


def test_cli_nn_failed_start_leaves_no_new_folder(tmp_path, capsys):
    """An error before the first round (here: no Fashion-MNIST files) removes only what it made."""
    import tomli_w

    cfg = tmp_path / "fmnist.toml"
    cfg.write_text('[data]\ndataset = "fashion_mnist"\n[train]\ndevice = "cpu"\n')
    nowhere = ["--data-root", str(tmp_path / "nowhere"), "--no-progress"]
    assert main(["nn", str(cfg), "--out", str(tmp_path / "a" / "b" / "out"), *nowhere]) == 2
    assert "Fashion-MNIST not found" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fmnist.toml"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["nn", str(cfg), "--out", str(empty), *nowhere]) == 2
    assert empty.is_dir() and not any(empty.iterdir())
    earlier = tmp_path / "earlier"  # an experiment being resumed keeps its folder
    earlier.mkdir()
    with open(earlier / "config.toml", "wb") as fh:
        tomli_w.dump(load_nn_config(cfg).to_dict(), fh)
    assert main(["nn", str(cfg), "--out", str(earlier), "--resume", *nowhere]) == 2
    assert (earlier / "config.toml").is_file()
    capsys.readouterr()


@pytest.mark.parametrize("stop_at", [1, 2])
def test_cli_nn_interrupt_says_what_was_kept(tmp_path, capsys, monkeypatch, stop_at):
    real, calls = Trainer.run_round, []

    def run_round(self):
        calls.append(1)
        if len(calls) == stop_at:
            raise KeyboardInterrupt
        return real(self)

    monkeypatch.setattr(Trainer, "run_round", run_round)
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(TINY)
    out = tmp_path / "out"
    assert main(["nn", str(cfg), "--out", str(out), "--no-progress"]) == 130
    err = capsys.readouterr().err.strip()
    if stop_at == 1:  # nothing to resume from: no folder either
        assert err == "savic nn: interrupted; nothing was kept" and not out.exists()
    else:
        assert err == (f"savic nn: interrupted; the checkpoints written so far are kept in {out}/ "
                       "(rerun with --resume to continue)")
        assert (out / "runs/iid/local_sgd/seed0/checkpoint.pt").is_file()


@pytest.mark.parametrize("value,expected", [(".", "--out must name a folder to create, got '.'"),
                                            ("{file}", "exists and is a file; choose another --out")])
def test_cli_nn_out_must_be_a_folder(tmp_path, capsys, value, expected):
    (tmp_path / "f").write_text("mine")
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(TINY)
    assert main(["nn", str(cfg), "--out", value.replace("{file}", str(tmp_path / "f")), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and expected in err, err
    assert main(["nn", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert f"{tmp_path} is a folder, not a config file" in capsys.readouterr().err


def test_cli_nn_without_torch_says_what_to_install(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)
    assert main(["nn", str(tmp_path / "x.toml")]) == 2
    assert "pip install 'savic-theory[nn]'" in capsys.readouterr().err


def test_savic_help_does_not_import_torch():
    code = ("import sys; sys.modules['torch'] = None\n"
            "from savic_theory.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit as e:\n    assert e.code == 0\n"
            "try:\n    main(['nn', '--help'])\nexcept SystemExit as e:\n    assert e.code == 0\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "nn" in out.stdout and "CONFIG.toml" in out.stdout


# ------------------------------------------------------------------------------ config
@pytest.mark.parametrize("raw,exc,match", [
    ({"train": {"local_stepz": 1}}, ValueError, "train.local_stepz"),
    ({"trian": {}}, ValueError, r"\[trian\]"),
    ({"rounds": 3}, ValueError, r"^rounds is not in a table: put it under \[train\]$"),
    ({"train": {"rounds": "3"}}, TypeError, "train.rounds"),
    ({"train": {"rounds": 0}}, ValueError, "train.rounds"),
    ({"train": {"methods": ["adam"]}}, ValueError, r"train.methods\[0\]"),
    ({"train": {"seeds": [1, 1]}}, ValueError, "train.seeds"),
    ({"data": {"splits": []}}, ValueError, "data.splits"),
    ({"data": {"alpha": 0.0}}, ValueError, "data.alpha"),
    ({"data": {"dataset": "mnist"}}, ValueError, "data.dataset"),
    ({"train": {"device": "gpu"}}, ValueError, "train.device"),
    ({"model": {"width": 4097}}, ValueError, r"^model\.width must be <= 4096, got 4097$"),
    ({"model": {"width": 2**62}}, ValueError, r"^model\.width must be <= 4096, got 4611686018427387904$"),
    ({"method": {"adam": {"beta": 1.0}}}, ValueError, "method.adam.beta"),
    ({"method": {"adamw": {"gamma": 1.0}}}, ValueError, "method.adamw"),
    ({"method": {"local_sgd": {"beta": 0.9}}}, ValueError, "method.local_sgd.beta"),
])
def test_config_errors_name_the_key(raw, exc, match):
    with pytest.raises(exc, match=match):
        NNConfig.from_dict(raw)


def test_method_parameters_rule_table_then_method_table():
    cfg = NNConfig.from_dict({"method": {"adam": {"gamma": 0.01, "beta": 0.9},
                                         "adam-local": {"gamma": 0.02}, "local_sgd": {"gamma": 0.3}}})
    e = METHOD_DEFAULTS["adam"]["e"]
    assert cfg.method_params("adam-global") == {"gamma": 0.01, "beta": 0.9, "e": e}
    assert cfg.method_params("adam-local") == {"gamma": 0.02, "beta": 0.9, "e": e}
    assert cfg.method_params("local_sgd") == {"gamma": 0.3}
    assert NNConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="gamma"):
        make_method("adam-local", gamma=0.0)
    with pytest.raises(ValueError, match="unknown method"):
        make_method("adam", gamma=0.1)


# ------------------------------------------------------------------------------ docs
def test_results_doc_lists_every_config_key():
    from pathlib import Path

    doc = (Path(__file__).resolve().parent.parent / "docs" / "nn-results.md").read_text()
    missing = [f"{t}.{k}" for t, k in HELP if f"`{t}.{k}`" not in doc]
    assert not missing, f"document these keys in docs/nn-results.md: {missing}"


@pytest.mark.parametrize("module", ["model", "data", "methods", "engine", "config", "runner"])
def test_docstring_examples_run(module):
    import doctest
    import importlib

    mod = importlib.import_module(f"savic_theory.nn.{module}")
    failures, tried = doctest.testmod(mod, optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS)
    assert tried > 0 and failures == 0


# ------------------------------------------------------------------------------ data
def _idx_bytes(arr: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in arr.shape)
    return header + arr.astype(np.uint8).tobytes()


@pytest.mark.parametrize("compressed", [True, False])
def test_fashion_mnist_reader_on_synthetic_idx_files(tmp_path, compressed):
    rng = np.random.default_rng(0)
    arrays = {"train-images-idx3-ubyte": rng.integers(0, 256, (5, 28, 28)),
              "train-labels-idx1-ubyte": rng.integers(0, 10, 5),
              "t10k-images-idx3-ubyte": rng.integers(0, 256, (3, 28, 28)),
              "t10k-labels-idx1-ubyte": rng.integers(0, 10, 3)}
    for name, arr in arrays.items():
        raw = _idx_bytes(arr)
        if compressed:
            (tmp_path / f"{name}.gz").write_bytes(gzip.compress(raw))
        else:
            (tmp_path / name).write_bytes(raw)
    s = load_fashion_mnist(tmp_path)
    assert s.train_x.shape == (5, 1, 32, 32) and s.test_x.shape == (3, 1, 32, 32) and s.classes == 10
    np.testing.assert_array_equal(s.train_x[:, 0, 2:30, 2:30], arrays["train-images-idx3-ubyte"])
    assert not s.train_x[:, :, :2].any() and not s.train_x[:, :, :, 30:].any()  # zero padding
    np.testing.assert_array_equal(s.test_y, arrays["t10k-labels-idx1-ubyte"])


def _fashion_mnist_arrays(rng) -> dict:
    """The four Fashion-MNIST IDX arrays at a tiny size: six training and four test images."""
    return {"train-images-idx3-ubyte": rng.integers(0, 256, (6, 28, 28)),
            "train-labels-idx1-ubyte": rng.integers(0, 10, 6),
            "t10k-images-idx3-ubyte": rng.integers(0, 256, (4, 28, 28)),
            "t10k-labels-idx1-ubyte": rng.integers(0, 10, 4)}


def _tiny_fashion_mnist_run(root, out) -> int:
    """``savic nn`` on the Fashion-MNIST files in ``root`` (two clients, width 2, one round): the exit status."""
    cfg = root / "fm.toml"
    cfg.write_text('[data]\ndataset = "fashion_mnist"\nclients = 2\nsplits = ["iid"]\nbatch_size = 2\n'
                   '[model]\nwidth = 2\n[train]\nrounds = 1\nlocal_steps = 1\nmethods = ["local_sgd"]\n'
                   'device = "cpu"\n')
    return main(["nn", str(cfg), "--out", str(out), "--data-root", str(root), "--no-progress"])


def test_labels_outside_the_classes_are_a_reader_error_not_a_traceback(tmp_path, capsys):
    """A damaged labels file (here label 200 of 10 classes) is named by the reader; before, the
    run started and failed inside the cross-entropy with an IndexError traceback."""
    rng = np.random.default_rng(0)
    arrays = _fashion_mnist_arrays(rng)
    arrays["train-labels-idx1-ubyte"][3] = 200
    for name, arr in arrays.items():
        (tmp_path / name).write_bytes(_idx_bytes(arr))
    with pytest.raises(ValueError, match=r"train-labels-idx1-ubyte: labels must lie in 0\.\.9, found 200"):
        load_fashion_mnist(tmp_path)
    out = tmp_path / "out"
    assert _tiny_fashion_mnist_run(tmp_path, out) == 2
    err = capsys.readouterr().err
    assert err.startswith("savic nn: error: ") and "found 200" in err and err.count("\n") == 1, err
    assert not out.exists()
    cifar = tmp_path / "cifar-10-batches-py"
    cifar.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        labels = [1, 10 if name == "test_batch" else 2]
        batch = {b"data": rng.integers(0, 256, (2, 3072), dtype=np.uint8), b"labels": labels}
        (cifar / name).write_bytes(pickle.dumps(batch))
    with pytest.raises(ValueError, match=r"test_batch: labels must lie in 0\.\.9, found 10"):
        load_cifar10(tmp_path)


def test_idx_reader_rejects_bad_files(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x01\x02\x08\x01\x00\x00\x00\x01\x05")
    with pytest.raises(ValueError, match="magic"):
        read_idx(tmp_path / "bad")
    (tmp_path / "short").write_bytes(_idx_bytes(np.zeros(4))[:-1])
    with pytest.raises(ValueError, match="header says"):
        read_idx(tmp_path / "short")
    with pytest.raises(FileNotFoundError, match="dataset-fashion-mnist"):
        load_fashion_mnist(tmp_path)


def test_a_damaged_gzip_is_a_reader_error_naming_the_file(tmp_path, capsys):
    """A .gz whose deflate stream is damaged (its header intact) raises zlib.error, which the
    reader let through as a traceback from ``savic nn``."""
    for name, arr in _fashion_mnist_arrays(np.random.default_rng(0)).items():
        packed = gzip.compress(_idx_bytes(arr))
        if name == "train-images-idx3-ubyte":  # the 10-byte gzip header kept, the deflate body flipped
            packed = packed[:10] + bytes(b ^ 0x5A for b in packed[10:200]) + packed[200:]
        (tmp_path / f"{name}.gz").write_bytes(packed)
    bad = tmp_path / "train-images-idx3-ubyte.gz"
    with pytest.raises(ValueError, match=rf"^cannot read IDX file {bad}: "):
        read_idx(bad)
    out = tmp_path / "out"
    assert _tiny_fashion_mnist_run(tmp_path, out) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"savic nn: error: cannot read IDX file {bad}: ") and err.count("\n") == 1, err
    assert not out.exists()


def test_cifar10_reader_and_the_missing_folder_error(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "cifar-10-batches-py")):
        load_cifar10(tmp_path)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(1)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batches[name] = {b"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8),
                         b"labels": list(rng.integers(0, 10, 4))}
        (folder / name).write_bytes(pickle.dumps(batches[name]))
    for root in (tmp_path, folder):
        s = load_cifar10(root)
        assert s.train_x.shape == (20, 3, 32, 32) and s.test_x.shape == (4, 3, 32, 32)
    # rows are 1024 red, then 1024 green, then 1024 blue values, each image row-major
    first = batches["data_batch_1"][b"data"][0]
    np.testing.assert_array_equal(s.train_x[0, 1, 0, :], first[1024:1056])
    np.testing.assert_array_equal(s.test_y, batches["test_batch"][b"labels"])
    (folder / "test_batch").unlink()
    with pytest.raises(FileNotFoundError, match="missing: test_batch"):
        load_cifar10(folder)


@pytest.mark.parametrize("method", ["iid", "dirichlet", "shards"])
def test_client_parts_cover_every_row_once(method):
    y = np.repeat(np.arange(5), 20)
    parts = client_parts(y, 5, method, alpha=0.1, seed=3)
    assert len(parts) == 5 and all(p.size > 0 for p in parts)
    np.testing.assert_array_equal(np.sort(np.concatenate(parts)), np.arange(100))
    if method == "shards":  # 10 shards of 10 rows, each inside one label
        assert all(len(np.unique(y[p])) <= 2 for p in parts)
    if method == "dirichlet":  # α = 0.1: clients far from the uniform label mix
        assert max(np.bincount(y[p], minlength=5).max() / p.size for p in parts) > 0.5


def test_augment_crops_and_flips():
    x = torch.arange(2 * 1 * 3 * 3).view(2, 1, 3, 3).to(torch.uint8)
    same = augment(x, torch.full((2, 2), 2), torch.zeros(2, dtype=torch.bool), 2)
    assert torch.equal(same, x)
    flipped = augment(x, torch.full((2, 2), 2), torch.ones(2, dtype=torch.bool), 2)
    assert torch.equal(flipped, x.flip(-1))
    shifted = augment(x, torch.tensor([[0, 2], [3, 2]]), torch.zeros(2, dtype=torch.bool), 2)
    assert torch.equal(shifted[0, 0, 2], x[0, 0, 0]) and not shifted[0, 0, :2].any()  # moved down by 2
    assert torch.equal(shifted[1, 0, 0], x[1, 0, 1])  # moved up by 1


def test_device_data_batches_and_normalization():
    s = synthetic_images(40, 10, classes=2, channels=3, size=8)
    data = DeviceData(s.train_x, s.train_y, client_parts(s.train_y, 2), s.test_x, s.test_y, augment=True)
    gens = [torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)]
    x, y = data.client_batch(range(2), gens, 5)
    assert x.shape == (2, 5, 3, 8, 8) and y.shape == (2, 5) and x.dtype == torch.float32
    allx = data.normalize(data.train_x)
    assert abs(float(allx.mean())) < 1e-5 and abs(float(allx.std()) - 1) < 0.05
    with pytest.raises(ValueError, match="equally many"):
        DeviceData(s.train_x, s.train_y, [np.arange(3), np.arange(3, 7)]).client_batch(range(2), gens, 0)
    with pytest.raises(ValueError, match="at least one"):
        DeviceData(s.train_x, s.train_y, [np.arange(3), np.array([], dtype=int)])


def test_evaluation_batches_are_the_same_on_any_number_of_processes():
    """BatchNorm normalises an evaluation batch by its own statistics: the set is cut into the
    same batches for 1, 2 or 3 processes (process r takes batches r, r + W, ...), so every image
    is evaluated in the same company; together the processes see each image once."""
    s = synthetic_images(8, 23, classes=2, size=8)
    data = DeviceData(s.train_x, s.train_y, client_parts(s.train_y, 2), s.test_x, s.test_y)

    def batches(world):
        # each batch as the pixel sums of its images, in order: which images, together
        return sorted(xb.sum(dim=(1, 2, 3)).tolist() for r in range(world) for xb, _ in data.test_batches(5, r, world))
    one = batches(1)
    assert sorted(len(b) for b in one) == [3, 5, 5, 5, 5]
    assert batches(2) == one and batches(3) == one and batches(7) == one  # 7 > 5 batches: some get none
    assert len({v for b in one for v in b}) == 23  # every image once


@pytest.mark.parametrize("content", [b"garbage\n", pickle.dumps([1, 2, 3]), pickle.dumps({b"data": 1})[:-3],
                                     pickle.dumps({b"data": np.zeros(5, np.uint8), b"labels": [0]})])
def test_a_damaged_cifar10_batch_is_named(tmp_path, content):
    """Text, another pickled object, a truncated pickle or data of the wrong size: a ValueError
    naming the file (the CLI's one-line error), never an error that leaves the file unnamed."""
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (folder / name).write_bytes(content)
    with pytest.raises(ValueError, match=f"^{folder / 'data_batch_1'} is not a CIFAR-10 python batch"):
        load_cifar10(tmp_path)
