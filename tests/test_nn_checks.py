"""The ResNet18 harness on bad inputs: diverged runs, strict JSON, --report's config check, step
sizes outside the training dtype, config keys named in split errors (CPU, width 2, seconds)."""
from __future__ import annotations

import json
import math
import tomllib

import pytest

torch = pytest.importorskip("torch")

from savic_theory.cli import main  # noqa: E402
from savic_theory.nn import (DeviceData, NNConfig, Objective, ResNet18, Trainer, client_parts,  # noqa: E402
                             init_params, make_method, run_experiment, synthetic_images)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


SMALL = """
[data]
synthetic_train = 64
synthetic_test = 32
synthetic_classes = 4
synthetic_size = 16
clients = 2
splits = ["iid"]
batch_size = 8
train_eval_size = 32
augment = false
[model]
width = 2
norm_groups = 2
[train]
rounds = 2
local_steps = 2
seeds = [0, 1]
methods = ["local_sgd", "adam-global"]
device = "cpu"
threads = 1
[method.local_sgd]
gamma = 1e30
[method.adam]
gamma = 0.001
"""


def as_json(value) -> str:
    """``value`` as JSON text: compares run records whose diverged losses are NaN (NaN ≠ NaN)."""
    return json.dumps(value, sort_keys=True)


def small(**tables) -> dict:
    raw = tomllib.loads(SMALL)
    for table, values in tables.items():
        raw.setdefault(table, {}).update(values)
    return raw


def strict_json(path):
    """Parse as strict JSON: NaN, Infinity and -Infinity are errors."""
    def reject(constant):
        raise ValueError(f"{path}: {constant} is not JSON")
    return json.loads(path.read_text(), parse_constant=reject)


# ------------------------------------------------------------------------------ divergence
def test_diverged_run_has_no_test_accuracy_and_no_share_in_the_means(tmp_path, capsys):
    cfg = tmp_path / "div.toml"
    cfg.write_text(SMALL)
    out = tmp_path / "out"
    assert main(["nn", str(cfg), "--out", str(out), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert text.count("local_sgd/seed0: diverged in round 1 (loss not finite)\n") == 1, text
    assert text.count("diverged in round 1 (loss not finite)") == 2 and "test acc nan" not in text, text
    for seed in (0, 1):
        hist = strict_json(out / f"runs/iid/local_sgd/seed{seed}/history.json")
        assert hist["status"] == "diverged"
        last = hist["history"][-1]
        assert last["test_loss"] is None and last["test_acc"] is None  # argmax of NaN outputs is no accuracy
    rows = [r.split(",") for r in (out / "results.csv").read_text().splitlines()]
    col = rows[0].index("test_acc")
    assert [r[col] for r in rows[1:] if r[1] == "local_sgd" and r[3] == "1"] == ["nan", "nan"]
    assert rows[0][-1] == "status"
    assert [r[-1] for r in rows[1:] if r[1] == "local_sgd"] == ["ok", "diverged"] * 2  # rounds 0 and 1, two seeds
    assert {r[-1] for r in rows[1:] if r[1] == "adam-global"} == {"ok"}
    summary = strict_json(out / "summary.json")
    diverged = summary["table"]["iid"]["local_sgd"]
    assert diverged["runs"] == diverged["diverged"] == 2
    assert diverged["test_acc"] == {"mean": None, "std": None, "min": None, "max": None, "n": 0}
    assert diverged["best_test_acc"]["n"] == 0
    fine = summary["table"]["iid"]["adam-global"]
    assert fine["runs"] == 2 and fine["diverged"] == 0 and fine["test_acc"]["n"] == 2
    assert all(r["final"]["test_acc"] is None for r in summary["runs"] if r["method"] == "local_sgd")
    assert (out / "figures/rounds.png").stat().st_size > 0

    # one of two seeds diverged: the seed statistics are those of the other
    path = out / "runs/iid/adam-global/seed1/history.json"
    hist = strict_json(path)
    kept = strict_json(out / "runs/iid/adam-global/seed0/history.json")["history"][-1]
    hist["status"] = "diverged"
    hist["history"][-1].update(test_acc=0.99, train_loss=None, test_loss=None)
    path.write_text(json.dumps(hist))
    assert main(["nn", str(cfg), "--out", str(out), "--report"]) == 0
    row = strict_json(out / "summary.json")["table"]["iid"]["adam-global"]
    assert row["runs"] == 2 and row["diverged"] == 1
    assert row["test_acc"]["n"] == 1 and row["test_acc"]["mean"] == kept["test_acc"]
    assert row["train_loss"]["mean"] == kept["train_loss"]
    capsys.readouterr()


def test_a_last_step_that_overflows_the_parameters_is_a_divergence(tmp_path):
    """One round of one step: the minibatch loss is taken before the step that overflows x, so
    only the evaluation of x̄ sees the divergence; the run must not count as done."""
    raw = small(train={"methods": ["local_sgd"], "seeds": [0], "rounds": 1, "local_steps": 1})
    summary = run_experiment(NNConfig.from_dict(raw), tmp_path / "o", progress=False)
    hist = strict_json(tmp_path / "o/runs/iid/local_sgd/seed0/history.json")
    last = hist["history"][-1]
    assert last["batch_loss"] is not None and last["test_loss"] is None  # finite loss, then x overflowed
    assert hist["status"] == "diverged"
    assert summary["table"]["iid"]["local_sgd"]["diverged"] == 1
    assert summary["runs"][0]["status"] == "diverged"


def test_resume_of_a_run_cut_off_as_it_diverged_does_not_train_on(tmp_path):
    """Interrupted after the checkpoint of the round that diverged but before the history said
    so: resuming must end the run there, as an uninterrupted run does, not train another round."""
    raw = small(train={"methods": ["local_sgd"], "seeds": [0], "rounds": 3})
    cfg = NNConfig.from_dict(raw)
    run_experiment(cfg, tmp_path / "straight", progress=False)
    straight = strict_json(tmp_path / "straight/runs/iid/local_sgd/seed0/history.json")
    assert straight["status"] == "diverged" and len(straight["history"]) == 2  # rounds 0 and 1

    def stop(split, method, seed, record):
        raise KeyboardInterrupt  # after round 1's checkpoint, before the final history

    with pytest.raises(KeyboardInterrupt):
        run_experiment(cfg, tmp_path / "cut", progress=False, on_round=stop)
    run_experiment(cfg, tmp_path / "cut", progress=False, resume=True)
    resumed = strict_json(tmp_path / "cut/runs/iid/local_sgd/seed0/history.json")
    assert resumed["status"] == "diverged"
    assert [r["round"] for r in resumed["history"]] == [0, 1]


def test_accuracy_of_non_finite_outputs_is_nan():
    s = synthetic_images(8, 8, classes=4, size=16)
    data = DeviceData(s.train_x, s.train_y, client_parts(s.train_y, 1), s.test_x, s.test_y)
    net = ResNet18(classes=4, width=2, norm_groups=2)
    obj = Objective(net)
    x = init_params(net, 0)
    loss, correct, n = obj.evaluate(x, data.test_batches(4)).tolist()
    assert math.isfinite(loss) and math.isfinite(correct) and n == 8
    x[0] = math.nan
    loss, correct, n = obj.evaluate(x, data.test_batches(4)).tolist()
    assert math.isnan(loss) and math.isnan(correct) and n == 8


def test_result_json_is_strict_and_resume_reads_it_back(tmp_path):
    raw = small(train={"methods": ["adam-global"], "seeds": [0], "rounds": 1})
    cfg = NNConfig.from_dict(raw)
    first = run_experiment(cfg, tmp_path / "o", progress=False)
    hist = strict_json(tmp_path / "o/runs/iid/adam-global/seed0/history.json")
    assert hist["history"][0]["batch_loss"] is None and hist["history"][0]["drift"] is None  # round 0
    assert strict_json(tmp_path / "o/summary.json")["runs"] == json.loads(json.dumps(first["runs"]))
    csv = (tmp_path / "o/results.csv").read_text()
    again = run_experiment(cfg, tmp_path / "o", progress=False, resume=True)  # finished: read back
    assert (tmp_path / "o/results.csv").read_text() == csv
    assert again["table"] == first["table"]


# ------------------------------------------------------------------------------ --report
def test_report_refuses_a_config_other_than_the_saved_one(tmp_path, capsys):
    raw = small(train={"methods": ["local_sgd"], "seeds": [0], "rounds": 1}, method={"local_sgd": {"gamma": 0.1}})
    run_experiment(NNConfig.from_dict(raw), tmp_path / "o", progress=False)
    other = small(train={"methods": ["local_sgd"], "seeds": [0], "rounds": 1}, method={"local_sgd": {"gamma": 0.5}})
    with pytest.raises(ValueError, match=r"--report: the config differs from .*config.toml in method.local_sgd.gamma$"):
        run_experiment(NNConfig.from_dict(other), tmp_path / "o", report=True)
    before = (tmp_path / "o/summary.json").read_text()
    import tomli_w

    changed = tmp_path / "changed.toml"
    changed.write_text(tomli_w.dumps(other))
    assert main(["nn", str(changed), "--out", str(tmp_path / "o"), "--report"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--report: the config differs" in err and "method.local_sgd.gamma" in err
    assert (tmp_path / "o/summary.json").read_text() == before
    where = small(train={"methods": ["local_sgd"], "seeds": [0], "rounds": 1, "threads": 2},
                  method={"local_sgd": {"gamma": 0.1}})
    summary = run_experiment(NNConfig.from_dict(where), tmp_path / "o", report=True)  # where it ran: no matter
    assert summary["config"]["method"]["local_sgd"]["gamma"] == 0.1


# ------------------------------------------------------------------------------ step sizes and the dtype
@pytest.mark.parametrize("method,precision", [
    ({"local_sgd": {"gamma": 1e308}}, "auto"),
    ({"local_sgd": {"gamma": 1e39}}, "fp32"),
    ({"adam": {"gamma": 1e39}}, "bf16"),
    ({"adam-local": {"gamma": 1e-50}}, "fp32"),
    ({"oasis": {"e": 1e39}}, "fp32"),
    ({"rmsprop": {"e": 1e-320}}, "fp64"),
])
def test_step_size_and_clip_level_must_fit_the_training_dtype(method, precision):
    (name, values), = method.items()
    (key, value), = values.items()
    with pytest.raises(ValueError, match=rf"^method\.{name}\.{key} = .* the range of the training dtype"):
        NNConfig.from_dict({"train": {"precision": precision}, "method": method})


def test_step_size_beyond_float32_is_fine_in_fp64_and_a_cli_error_otherwise(tmp_path, capsys):
    cfg = NNConfig.from_dict({"train": {"precision": "fp64"}, "method": {"local_sgd": {"gamma": 1e308}}})
    assert cfg.method_params("local_sgd") == {"gamma": 1e308}
    path = tmp_path / "big.toml"
    path.write_text(SMALL.replace("gamma = 1e30", "gamma = 1e308"))
    assert main(["nn", str(path), "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("savic nn: error: method.local_sgd.gamma = 1e+308 is outside") and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


def test_trainer_rejects_a_step_size_its_dtype_cannot_hold():
    s = synthetic_images(8, 4, classes=2, size=16)
    data = DeviceData(s.train_x, s.train_y, client_parts(s.train_y, 2), s.test_x, s.test_y)
    net = ResNet18(classes=2, width=2, norm_groups=2)
    for dtype, gamma in ((torch.float32, 1e39), (torch.float64, 1e-320)):
        with pytest.raises(ValueError, match="^gamma = .* does not fit"):
            Trainer(Objective(net), data, make_method("local_sgd", gamma), init_params(net, 0, dtype),
                    local_steps=1, batch_size=2, dtype=dtype)
    with pytest.raises(ValueError, match="^e = .* does not fit"):
        Trainer(Objective(net), data, make_method("adam-global", 1e-3, e=1e39), init_params(net, 0),
                local_steps=1, batch_size=2)



@pytest.mark.parametrize("kw,error,match", [
    (dict(local_steps=0), ValueError, "^local_steps must be >= 1, got 0$"),
    (dict(batch_size=-1), ValueError, "^batch_size must be >= 0, got -1$"),
    (dict(eval_batch=2.0), TypeError, "^eval_batch must be an integer, got 2.0$"),
    (dict(seed=True), TypeError, "^seed must be an integer, got True$"),
])
def test_trainer_names_a_bad_integer_argument(kw, error, match):
    s = synthetic_images(8, 4, classes=2, size=16)
    data = DeviceData(s.train_x, s.train_y, client_parts(s.train_y, 2), s.test_x, s.test_y)
    net = ResNet18(classes=2, width=2, norm_groups=2)
    args = dict(local_steps=1, batch_size=2) | kw
    with pytest.raises(error, match=match):
        Trainer(Objective(net), data, make_method("local_sgd", 0.1), init_params(net, 0), **args)

# ------------------------------------------------------------------------------ keys in split errors
@pytest.mark.parametrize("data,match", [
    ({"clients": 5000}, r"^data\.clients = 5000 exceeds the 64 training images of synthetic$"),
    ({"splits": ["shards"], "shards_per_client": 40},
     r"^data\.clients × data\.shards_per_client = 80 exceeds the 64 training images"),
    ({"splits": ["dirichlet"], "batch_size": 0}, r"^data\.batch_size = 0 .* split 'dirichlet' gives from \d+ to \d+$"),
    ({"batch_size": 10**9}, r"^data\.batch_size = 1000000000 exceeds the 64 training images of synthetic "),
])
def test_split_errors_name_the_config_keys(tmp_path, data, match):
    cfg = NNConfig.from_dict(small(data=data, train={"methods": ["local_sgd"], "seeds": [0], "rounds": 1}))
    with pytest.raises(ValueError, match=match):
        run_experiment(cfg, tmp_path / "o", progress=False)
    assert not (tmp_path / "o").exists()


def test_full_batches_are_not_augmented_so_augment_must_be_off():
    with pytest.raises(ValueError, match=r"^data\.batch_size = 0 .* data\.augment = false"):
        NNConfig.from_dict({"data": {"batch_size": 0}})  # augment is on by default
    assert NNConfig.from_dict({"data": {"batch_size": 0, "augment": False}}).data.batch_size == 0
    s = synthetic_images(8, 4, classes=2, size=8)
    data = DeviceData(s.train_x, s.train_y, client_parts(s.train_y, 2), augment=True)
    gens = [torch.Generator().manual_seed(m) for m in range(2)]
    with pytest.raises(ValueError, match="batch_size = 0 .* augment=False"):
        data.client_batch(range(2), gens, 0)
    assert data.client_batch(range(2), gens, 3)[0].shape[:2] == (2, 3)


def test_figure_legend_names_a_method_missing_from_the_first_split(tmp_path):
    """The legend gathers every panel: a method all-NaN on the first split still gets its entry."""
    import matplotlib.pyplot as plt

    from savic_theory.nn import figures

    def history(value):
        return {"history": [{"round": r, "train_loss": value, "test_acc": value} for r in range(3)]}

    histories = {("iid", "local_sgd", 0): history(1.0), ("iid", "adam-global", 0): history(None),
                 ("dirichlet", "local_sgd", 0): history(1.0), ("dirichlet", "adam-global", 0): history(0.5)}
    methods = ["local_sgd", "adam-global"]
    fig = figures._figure(histories, ["iid", "dirichlet"], methods, ("train_loss", "test_acc"), ("train_loss",))
    try:
        assert [t.get_text() for t in fig.legends[0].get_texts()] == methods
    finally:
        plt.close(fig)
    assert figures.plot_rounds(histories, tmp_path / "rounds.png", ["iid", "dirichlet"], methods).stat().st_size > 0


@pytest.mark.parametrize("env, want", [
    ({}, "savic nn: error: "),
    ({"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0"}, "savic nn: error: "),
    ({"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1"}, ""),  # the same check failed on process 0
    ({"WORLD_SIZE": "4", "RANK": "2", "LOCAL_RANK": "0"}, "savic nn (process 2 of 4): error: "),
    ({"WORLD_SIZE": "2", "RANK": "1"}, "savic nn (process 1 of 2): error: "),  # no LOCAL_RANK: every one
])
def test_an_input_error_is_reported_once_per_machine_under_torchrun(tmp_path, capsys, monkeypatch, env, want):
    """torchrun starts every process with the same arguments: an error in them is printed by the
    first process of each machine, which names itself when it is not process 0."""
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert main(["nn", str(tmp_path / "missing.toml"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(want) if want else err == ""
    if want:
        assert "missing.toml" in err and err.count("\n") == 1


# ------------------------------------------------------------------------------ --resume that adds runs
def test_resume_may_add_seeds_methods_and_splits_and_trains_only_those(tmp_path):
    """An experiment grows on --resume by seeds, methods and splits: the runs already made are
    kept as they are (not trained again), the new ones are trained, and config.toml becomes the
    extended config, so --report accepts it."""
    base = small(train={"methods": ["local_sgd"], "seeds": [0], "rounds": 1}, method={"local_sgd": {"gamma": 0.1}})
    run_experiment(NNConfig.from_dict(base), tmp_path / "o", progress=False)
    kept = (tmp_path / "o/runs/iid/local_sgd/seed0/history.json").read_text()
    trained = []
    more = small(train={"methods": ["local_sgd", "adam-global"], "seeds": [0, 1], "rounds": 1},
                 data={"splits": ["iid", "shards"], "shards_per_client": 2}, method={"local_sgd": {"gamma": 0.1}})
    summary = run_experiment(NNConfig.from_dict(more), tmp_path / "o", progress=False, resume=True,
                             on_round=lambda split, method, seed, rec: trained.append((split, method, seed)))
    assert (tmp_path / "o/runs/iid/local_sgd/seed0/history.json").read_text() == kept
    assert ("iid", "local_sgd", 0) not in trained and len(set(trained)) == 2 * 2 * 2 - 1
    assert len(summary["runs"]) == 8
    assert NNConfig.from_dict(tomllib.loads((tmp_path / "o/config.toml").read_text())) == NNConfig.from_dict(more)
    assert run_experiment(NNConfig.from_dict(more), tmp_path / "o", report=True)["runs"] == summary["runs"]


@pytest.mark.parametrize("change, named", [
    ({"train": {"seeds": [1]}}, "train.seeds"),                            # a seed dropped
    ({"method": {"local_sgd": {"gamma": 0.5}}}, "the parameters of local_sgd"),
    ({"train": {"rounds": 2}}, "train.rounds"),
])
def test_resume_refuses_to_drop_runs_or_change_what_they_were(tmp_path, change, named):
    base = small(train={"methods": ["local_sgd"], "seeds": [0], "rounds": 1}, method={"local_sgd": {"gamma": 0.1}})
    run_experiment(NNConfig.from_dict(base), tmp_path / "o", progress=False)
    saved = (tmp_path / "o/config.toml").read_text()
    raw = small(train={"methods": ["local_sgd"], "seeds": [0], "rounds": 1}, method={"local_sgd": {"gamma": 0.1}})
    for table, values in change.items():
        raw[table].update(values)
    with pytest.raises(ValueError, match=rf"^--resume: the config differs from .*config.toml in {named} "
                                         r"\(a resumed experiment may only add seeds, methods and splits\)$"):
        run_experiment(NNConfig.from_dict(raw), tmp_path / "o", progress=False, resume=True)
    assert (tmp_path / "o/config.toml").read_text() == saved


def test_resume_that_fails_before_an_added_run_keeps_the_saved_config(tmp_path):
    """An added split whose own parameter is new (no saved run used it) is accepted; when the
    extended experiment then fails before any added run began, config.toml is the saved one
    again, so the original config still resumes and reports."""
    base = small(train={"methods": ["local_sgd"], "seeds": [0], "rounds": 1}, method={"local_sgd": {"gamma": 0.1}})
    run_experiment(NNConfig.from_dict(base), tmp_path / "o", progress=False)
    saved = (tmp_path / "o/config.toml").read_text()
    more = small(train={"methods": ["local_sgd"], "seeds": [0], "rounds": 1}, method={"local_sgd": {"gamma": 0.1}},
                 data={"splits": ["iid", "shards"], "shards_per_client": 40})  # 2 × 40 shards > 64 images
    with pytest.raises(ValueError, match=r"data\.shards_per_client = 80 exceeds"):
        run_experiment(NNConfig.from_dict(more), tmp_path / "o", progress=False, resume=True)
    assert (tmp_path / "o/config.toml").read_text() == saved
    trained = []
    resumed = run_experiment(NNConfig.from_dict(base), tmp_path / "o", progress=False, resume=True,
                             on_round=lambda *run: trained.append(run))
    assert trained == []  # the one saved run was finished: nothing to train again
    assert [(r["split"], r["method"], r["seed"], r["status"]) for r in resumed["runs"]] == [
        ("iid", "local_sgd", 0, "done")]
    reported = run_experiment(NNConfig.from_dict(base), tmp_path / "o", report=True)
    assert as_json(reported["runs"]) == as_json(resumed["runs"])


def test_resume_with_reordered_lists_saves_the_order_for_report(tmp_path):
    """Swapped methods on --resume: nothing is trained again, the saved config takes the new order
    (so --report with it is accepted), and the summary lists the same runs in that order."""
    base = small(train={"methods": ["local_sgd", "adam-global"], "seeds": [0], "rounds": 1})
    first = run_experiment(NNConfig.from_dict(base), tmp_path / "o", progress=False)
    assert [r["method"] for r in first["runs"]] == ["local_sgd", "adam-global"]
    swapped = small(train={"methods": ["adam-global", "local_sgd"], "seeds": [0], "rounds": 1})
    trained = []
    resumed = run_experiment(NNConfig.from_dict(swapped), tmp_path / "o", progress=False, resume=True,
                             on_round=lambda *run: trained.append(run))
    assert trained == []
    saved = tomllib.loads((tmp_path / "o/config.toml").read_text())
    assert saved["train"]["methods"] == ["adam-global", "local_sgd"]
    assert as_json(resumed["runs"]) == as_json([first["runs"][1], first["runs"][0]])  # the same runs, reordered
    summary = run_experiment(NNConfig.from_dict(swapped), tmp_path / "o", report=True)
    assert as_json(summary["runs"]) == as_json(resumed["runs"])
    assert list(summary["table"]["iid"]) == ["adam-global", "local_sgd"]
    assert summary["config"]["train"]["methods"] == ["adam-global", "local_sgd"]
    rows = (tmp_path / "o/results.csv").read_text().splitlines()[1:]
    assert [row.split(",")[1] for row in rows] == ["adam-global"] * 2 + ["local_sgd"] * 2  # rounds 0 and 1


@pytest.mark.parametrize("resume", [False, True])
def test_a_result_folder_of_another_command_is_not_offered_for_resume(tmp_path, capsys, resume):
    """A simulate result folder (config.toml without [train]) is refused as such, not as an
    experiment to pass --resume to (which then failed on its [problem] table)."""
    out = tmp_path / "qs"
    assert main(["simulate", "--dim", "3", "--clients", "2", "--steps", "4", "--runs", "1", "--no-progress",
                 "--out", str(out)]) == 0
    capsys.readouterr()
    cfg = tmp_path / "nn.toml"
    cfg.write_text(SMALL)
    before = sorted(p.name for p in out.iterdir())
    assert main(["nn", str(cfg), "--out", str(out), "--no-progress"] + (["--resume"] if resume else [])) == 2
    err = capsys.readouterr().err
    assert err == f"savic nn: error: {out} is not a savic nn result folder ({out / 'config.toml'} has no [train] " \
                  "table): choose another --out\n"
    assert sorted(p.name for p in out.iterdir()) == before


# ------------------------------------------------------------------------------ checkpoints, devices, memory
def _cut_after_one_round(tmp_path):
    """A CLI config and a result folder whose only run stopped after round 1 (checkpoint kept)."""
    cfg = tmp_path / "cut.toml"
    cfg.write_text(SMALL.replace("seeds = [0, 1]", "seeds = [0]").replace('"local_sgd", "adam-global"',
                                                                          '"adam-global"'))
    out = tmp_path / "out"

    def stop(*run):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_experiment(NNConfig.from_dict(tomllib.loads(cfg.read_text())), out, progress=False, on_round=stop)
    return cfg, out, out / "runs/iid/adam-global/seed0/checkpoint.pt"


@pytest.mark.parametrize("recorded", ["cuda", None])
def test_resume_refuses_a_checkpoint_of_another_device_type(tmp_path, capsys, recorded):
    """A checkpoint holds the clients' generator states, which belong to the device type they ran
    on (a CUDA generator's state is 16 bytes, a CPU one's 5056): one written on CUDA is refused on
    the CPU in one line, whether it records its device (``recorded``) or is older and does not.
    Before, train.device could change on --resume and set_state failed with a traceback."""
    cfg, out, ckpt = _cut_after_one_round(tmp_path)
    sd = torch.load(ckpt, weights_only=True)
    assert sd["device"] == "cpu"
    cuda_state = torch.tensor(list(range(16)), dtype=torch.uint8)  # seed and Philox offset
    sd["generators"] = [cuda_state.clone() for _ in sd["generators"]]
    if recorded:
        sd["device"] = recorded
    else:
        del sd["device"]
    torch.save(sd, ckpt)
    assert main(["nn", str(cfg), "--out", str(out), "--no-progress", "--resume"]) == 2
    err = capsys.readouterr().err
    assert err == (f"savic nn: error: --resume: {ckpt}: checkpoint was written on cuda and this run is on cpu; "
                   "the clients' random generators differ between device types, so it resumes only on cuda\n")


@pytest.mark.parametrize("damage", ["truncated", "not a zip", "empty", "a list"])
def test_a_damaged_checkpoint_is_named_on_resume(tmp_path, capsys, damage):
    """--resume on a checkpoint torch cannot read (cut short, another file, empty) or that holds
    something else is a one-line error naming the file, not torch's traceback; deleting the file,
    as it says, trains that run again from round 0."""
    cfg, out, ckpt = _cut_after_one_round(tmp_path)
    if damage == "a list":
        torch.save([1, 2], ckpt)
    else:
        ckpt.write_bytes({"truncated": ckpt.read_bytes()[:100], "not a zip": b"not a zip\n", "empty": b""}[damage])
    assert main(["nn", str(cfg), "--out", str(out), "--no-progress", "--resume"]) == 2
    err = capsys.readouterr().err
    reason = "is not a checkpoint of savic nn" if damage == "a list" else "cannot be read"
    assert err.startswith("savic nn: error: --resume: ") and f"{ckpt} " in err and reason in err, err
    assert err.count("\n") == 1 and err.endswith("delete it to train this run from round 0, or use another --out\n")
    ckpt.unlink()
    assert main(["nn", str(cfg), "--out", str(out), "--no-progress", "--resume"]) == 0
    hist = json.loads((ckpt.parent / "history.json").read_text())
    assert hist["status"] == "done" and [r["round"] for r in hist["history"]] == [0, 1, 2]


@pytest.mark.parametrize("damage", ["no state", "x cut short", "state None", "v cut short"])
def test_a_checkpoint_that_does_not_fit_the_run_is_named_on_resume(tmp_path, capsys, damage):
    """A readable checkpoint edited or damaged inside (a key gone, a tensor of another size) is a
    one-line error naming the file too, not an internal error."""
    cfg, out, ckpt = _cut_after_one_round(tmp_path)
    sd = torch.load(ckpt, weights_only=True)
    if damage == "no state":
        del sd["state"]
    elif damage == "state None":
        sd["state"] = None
    elif damage == "v cut short":
        key = next(k for k, v in sd["state"].items() if torch.is_tensor(v))
        sd["state"][key] = sd["state"][key][..., :-1]
    else:
        sd["x"] = sd["x"][:-3]
    torch.save(sd, ckpt)
    assert main(["nn", str(cfg), "--out", str(out), "--no-progress", "--resume"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"savic nn: error: --resume: {ckpt}") and err.count("\n") == 1, err
    assert {"no state": "does not fit this run (KeyError: 'state'); delete it to train this run from round 0",
            "state None": ": checkpoint has no scaling state, this run's method adam-global has",
            "v cut short": ": checkpoint's scaling state ",
            "x cut short": f": checkpoint's x has shape ({sd['x'].numel()},), this run's model needs ("}[damage] in err


def test_resume_removes_what_a_killed_process_half_wrote(tmp_path, capsys):
    """A process killed while writing leaves atomic_write's temporaries; --resume removes them."""
    cfg, out, ckpt = _cut_after_one_round(tmp_path)
    stale = [ckpt.parent / ".checkpoint.pt.abc12_xy.part", out / ".summary.json.k9k9k9k9.part",
             out / "figures" / ".rounds.png.y2y2y2y2.part"]  # atomic_write's names: 8 of [a-z0-9_]
    other = [out / ".summary.json.x.abcdefgh.part", out / "notes.part"]  # not atomic_write's for these files
    for p in stale + other:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"half")
    assert main(["nn", str(cfg), "--out", str(out), "--no-progress", "--resume"]) == 0
    capsys.readouterr()
    assert not any(p.exists() for p in stale)
    assert all(p.exists() for p in other)


def test_a_gpu_index_is_refused_under_torchrun(tmp_path, capsys, monkeypatch):
    """``train.device = "cuda:N"`` put every torchrun process on GPU N; with several processes it
    is an error that points to ``cuda`` (each process on GPU LOCAL_RANK). CUDA is emulated."""
    from savic_theory.nn.runner import pick_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert [str(pick_device("cuda", r, 4)) for r in range(4)] == ["cuda:0", "cuda:1", "cuda:2", "cuda:3"]
    assert str(pick_device("cuda:1", 0, 1)) == "cuda:1"  # one process: the GPU it names
    with pytest.raises(ValueError, match=r"^train\.device = 'cuda:1' would put all 4 processes on one GPU; "):
        pick_device("cuda:1", 2, 4)
    cfg = tmp_path / "gpu.toml"
    cfg.write_text(SMALL.replace('device = "cpu"', 'device = "cuda:1"'))
    for key, value in {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0"}.items():
        monkeypatch.setenv(key, value)
    assert main(["nn", str(cfg), "--out", str(tmp_path / "out"), "--no-progress"]) == 2
    assert capsys.readouterr().err == (
        "savic nn: error: train.device = 'cuda:1' would put all 2 processes on one GPU; use train.device = "
        "\"cuda\" with torchrun (each process takes GPU LOCAL_RANK)\n")
    assert not (tmp_path / "out").exists()


def test_cpu_out_of_memory_inside_torch_is_reported_as_such(tmp_path, capsys, monkeypatch):
    """PyTorch's CPU allocator fails with a plain RuntimeError ("DefaultCPUAllocator: can't
    allocate memory ..."), which gave a traceback; it is the one-line out-of-memory error. Any
    other RuntimeError is an internal error: its traceback and status 3."""
    def allocate(self):
        return torch.empty(2**50, dtype=torch.uint8)  # 1 PiB: beyond any address space

    monkeypatch.setattr(Trainer, "run_round", allocate)
    cfg = tmp_path / "oom.toml"
    cfg.write_text(SMALL)
    assert main(["nn", str(cfg), "--out", str(tmp_path / "out"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err == ("savic nn: error: out of memory (can't allocate memory: you tried to allocate "
                   f"{2**50} bytes): reduce data.batch_size, train.eval_batch or model.width\n"), err

    def fail(self):
        raise RuntimeError("something else went wrong")

    monkeypatch.setattr(Trainer, "run_round", fail)
    assert main(["nn", str(cfg), "--out", str(tmp_path / "out2"), "--no-progress"]) == 3  # an internal error
    err = capsys.readouterr().err
    assert "Traceback" in err and "RuntimeError: something else went wrong" in err


def test_full_batches_of_unequal_clients_are_refused_before_any_run(tmp_path):
    """``data.batch_size = 0`` with a split of unequal clients was found at that split's turn,
    after the earlier splits had trained and saved (and --resume then refused the corrected
    config); every split is checked before the first run."""
    trained = []
    cfg = NNConfig.from_dict(small(data={"splits": ["iid", "dirichlet"], "batch_size": 0},
                                   train={"methods": ["local_sgd"], "seeds": [0], "rounds": 1}))
    with pytest.raises(ValueError, match=r"^data\.batch_size = 0 .* split 'dirichlet' gives from \d+ to \d+$"):
        run_experiment(cfg, tmp_path / "o", progress=False, on_round=lambda *run: trained.append(run))
    assert trained == [] and not (tmp_path / "o").exists()


def test_the_shipped_nn_configs_load_and_the_cpu_sweep_differs_only_as_documented():
    """Every nn config in configs/ is valid; the step-size sweep and the tuned run are
    configs/nn-fmnist-cpu.toml with only gamma (times the file's factor), seeds and methods changed,
    so docs/nn-results.md's comparison of the three is a comparison of step sizes and seeds alone."""
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent / "configs"
    load = lambda p: NNConfig.from_dict(tomllib.loads(p.read_text())).to_dict()  # noqa: E731
    paths = sorted(root.glob("nn-*.toml")) + sorted((root / "nn-fmnist-cpu-tune").glob("*.toml"))
    assert len(paths) >= 8
    configs = {p: load(p) for p in paths}
    base = configs[root / "nn-fmnist-cpu.toml"]

    def without(cfg, *keys):
        cfg = json.loads(json.dumps(cfg))
        for key in keys:
            cfg["train"].pop(key)
        for values in cfg["method"].values():
            values.pop("gamma")
        return cfg

    for name, factor in (("x0.33", 1 / 3), ("x1", 1.0), ("x3", 3.0), ("x10", 10.0)):
        cfg = configs[root / "nn-fmnist-cpu-tune" / f"{name}.toml"]
        assert without(cfg, "seeds", "methods") == without(base, "seeds", "methods")
        assert cfg["train"]["seeds"] == [0]
        assert cfg["train"]["methods"] == ["local_sgd", "rmsprop-global", "adam-global", "oasis-global"]
        for method, values in base["method"].items():
            assert cfg["method"][method]["gamma"] == pytest.approx(values["gamma"] * factor, rel=2e-3)
    tuned = configs[root / "nn-fmnist-cpu-tuned.toml"]
    assert without(tuned, "seeds") == without(base, "seeds") and tuned["train"]["seeds"] == [1, 2]
    assert {m: v["gamma"] for m, v in tuned["method"].items()} == {
        "local_sgd": 0.1, "rmsprop": 1e-3, "adam": 1e-3, "oasis": 3e-3}
