"""Output paths and messages: ``--out`` never replaces user data, modes follow the umask.

Out of memory, interruptions and bad output paths each give one line that says what happened
(and, when interrupted, what was kept).
"""
from __future__ import annotations

import os
import stat

import pytest

import savic_theory
from savic_theory.cli import main
from savic_theory.cli._common import UserError, atomic_dir, check_result_folder, write_json

SMALL = ["--dim", "4", "--clients", "3", "--steps", "20", "--runs", "1", "--no-progress"]


def one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err, err
    return err


# ----------------------------------------------------------------------------- --out keeps user data
def test_out_refuses_a_folder_that_savic_did_not_write(tmp_path, capsys):
    out = tmp_path / "P"
    (out / "sub").mkdir(parents=True)
    (out / "important.txt").write_text("keep")
    assert main(["simulate", *SMALL, "--out", str(out)]) == 2
    err = one_line(capsys)
    assert err.startswith("savic simulate: error: --out") and "is not a savic result folder" in err
    assert "important.txt" in err and "choose another --out or remove it" in err
    assert (out / "important.txt").read_text() == "keep" and (out / "sub").is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["P"]  # refused before anything ran


def test_out_refuses_a_file_and_a_path_under_a_file(tmp_path, capsys):
    f = tmp_path / "f"
    f.write_text("mine")
    for cmd in (["simulate", *SMALL], ["verify", "--suite", "quick", "--no-progress"]):
        assert main([*cmd, "--out", str(f)]) == 2
        assert "exists and is a file; choose another --out" in one_line(capsys)
    assert main(["simulate", *SMALL, "--out", str(f / "x")]) == 2
    assert f"{f} is a file, not a folder" in one_line(capsys)
    assert f.read_text() == "mine" and sorted(p.name for p in tmp_path.iterdir()) == ["f"]


def test_out_refuses_a_users_lone_config_and_a_symlink(tmp_path, capsys):
    mine = tmp_path / "exp"
    mine.mkdir()
    (mine / "config.toml").write_text("[run]\nsteps = 20\n")
    (mine / "notes.md").write_text("mine")
    assert main(["simulate", *SMALL, "--out", str(mine)]) == 2
    assert "it holds notes.md" in one_line(capsys)
    link = tmp_path / "link"
    link.symlink_to(mine)
    assert main(["simulate", *SMALL, "--out", str(link)]) == 2
    assert "is a symbolic link" in one_line(capsys)
    assert sorted(p.name for p in mine.iterdir()) == ["config.toml", "notes.md"]


@pytest.mark.parametrize("files", [["config.toml"], ["config.toml", "report.md"]])
def test_out_refuses_a_users_config_even_beside_names_savic_writes(tmp_path, capsys, files):
    """A folder with the user's own (commented) config.toml, alone or with a report.md of theirs,
    is not a result folder: savic's folders always hold a summary.json or a report.json."""
    mine = tmp_path / "userexp"
    mine.mkdir()
    for name in files:
        (mine / name).write_text("# my own notes\n")
    assert main(["simulate", *SMALL, "--out", str(mine)]) == 2
    assert "it holds config.toml but no report.json or summary.json" in one_line(capsys)
    assert all((mine / name).read_text() == "# my own notes\n" for name in files)


def test_out_replaces_its_own_result_folder_and_an_empty_one(tmp_path, capsys):
    out = tmp_path / "res"
    out.mkdir()
    assert main(["simulate", *SMALL, "--out", str(out)]) == 0
    first = (out / "history.csv").read_text()
    assert main(["simulate", *SMALL, "--steps", "30", "--out", str(out)]) == 0  # a rerun replaces it
    assert (out / "history.csv").read_text() != first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["res"]  # no .old or .part left
    capsys.readouterr()


@pytest.mark.parametrize("value", ["", ".", "..", "/"])
@pytest.mark.parametrize("cmd", [["simulate", *SMALL], ["verify", "--no-progress"], ["bench", "--suite", "cpu"]])
def test_out_must_name_a_folder(capsys, cmd, value):
    assert main([*cmd, "--out", value]) == 2
    assert f"error: --out must name a folder to create, got {value!r}" in one_line(capsys)


def test_every_result_folder_is_recognised_as_one(tmp_path):
    """The names in RESULT_FILES/RESULT_FOLDERS follow what simulate and verify write."""
    from savic_theory.verify import Report

    out = tmp_path / "sim"
    assert main(["simulate", *SMALL, "--out", str(out)]) == 0
    assert check_result_folder(out) == out
    with atomic_dir(tmp_path / "ver") as tmp:
        Report("quick", 0.99, []).write(tmp)
        (tmp / "config.toml").write_text("[verify]\n")
        (tmp / "plots").mkdir(exist_ok=True)
        (tmp / "plots" / "identical.png").write_bytes(b"")
    assert check_result_folder(tmp_path / "ver") == tmp_path / "ver"


def test_atomic_dir_checks_again_before_replacing(tmp_path):
    target = tmp_path / "res"
    with pytest.raises(UserError, match="it holds later.txt"):
        with atomic_dir(target) as tmp:
            (tmp / "config.toml").write_text("")
            target.mkdir()
            (target / "later.txt").write_text("written while the run ran")
    assert (target / "later.txt").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["res"]


# ----------------------------------------------------------------------------- permissions
@pytest.mark.parametrize("mask,folder,file", [(0o022, 0o755, 0o644), (0o077, 0o700, 0o600)])
def test_result_files_follow_the_umask(tmp_path, capsys, mask, folder, file):
    old = os.umask(mask)
    try:
        out = tmp_path / "res"
        assert main(["simulate", *SMALL, "--out", str(out)]) == 0
        write_json(tmp_path / "x.json", {})
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == folder
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in [*out.iterdir(), tmp_path / "x.json"]}
    assert modes == dict.fromkeys(modes, file), modes  # plot.png and summary.json as the CSVs
    capsys.readouterr()


# ----------------------------------------------------------------------------- out of memory
def test_out_of_memory_is_one_line(monkeypatch, capsys):
    def huge(args):
        raise MemoryError("Unable to allocate 7.28 TiB for an array with shape (1000000, 1000, 1000) "
                          "and data type float64")

    monkeypatch.setattr("savic_theory.cli.simulate.run", huge)
    assert main(["simulate", "--runs", "1000000", "--clients", "1000", "--dim", "1000"]) == 2
    err = one_line(capsys)
    assert err == ("savic simulate: error: out of memory (unable to allocate 7.28 TiB for an array with shape "
                   "(1000000, 1000, 1000) and data type float64): reduce runs, clients or dim")


def test_torch_out_of_memory_is_one_line(monkeypatch, capsys):
    torch = pytest.importorskip("torch")

    def huge(args):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has ...\nmore")

    monkeypatch.setattr("savic_theory.cli.nn.run", huge)
    assert main(["nn", "x.toml"]) == 2
    assert one_line(capsys) == ("savic nn: error: out of memory (CUDA out of memory): reduce data.batch_size, "
                                "train.eval_batch or model.width")


# ----------------------------------------------------------------------------- interruptions
def _block_raises(monkeypatch, error, at=2):
    """Make the ``at``-th block that a ``savic simulate``/``run`` call runs raise ``error`` (the
    ones before it run)."""
    import savic_theory.experiment as experiment

    real, calls = experiment._run_block, []

    def raises_at(*a, **kw):
        calls.append(1)
        if len(calls) == at:
            raise error
        return real(*a, **kw)

    monkeypatch.setattr(experiment, "_run_block", raises_at)


def test_interrupted_simulate_names_the_work_folder(tmp_path, monkeypatch, capsys):
    _block_raises(monkeypatch, KeyboardInterrupt)
    out = tmp_path / "res"
    assert main(["simulate", *SMALL, "--scaling", "both", "--out", str(out)]) == 130
    err = one_line(capsys)
    work = tmp_path / ".res.work"
    assert err == (f"savic simulate: interrupted; no result folder was written to {out}; the finished blocks "
                   f"are kept in {work}/ (rerun with --resume to reuse them)")
    assert work.is_dir() and not out.exists()


@pytest.mark.parametrize("argv,work,expected", [
    (["verify", "--out", "{out}"], True, "no result folder was written to {out}; the finished cases and "
                                         "searches are kept in {work}/ (rerun with --resume to reuse them)"),
    (["verify", "--out", "{out}"], False, "no result folder was written to {out} and nothing was kept"),
    (["bench"], False, "nothing was written"),
    (["bench", "--suite", "cpu", "--out", "{out}"], False, "the results finished so far are in {out}/"),
])
def test_interrupt_message_fits_the_command(tmp_path, monkeypatch, capsys, argv, work, expected):
    out, kept = tmp_path / "res", tmp_path / ".res.work"

    def interrupted(args):
        if work:
            kept.mkdir()
            (kept / "options.json").write_text("{}")
            (kept / "case-1.npz").write_bytes(b"")  # one finished case
        raise KeyboardInterrupt

    monkeypatch.setattr(f"savic_theory.cli.{argv[0]}.run", interrupted)
    assert main([a.replace("{out}", str(out)) for a in argv]) == 130
    expected = expected.replace("{out}", str(out)).replace("{work}", str(kept))
    assert one_line(capsys) == f"savic {argv[0]}: interrupted; {expected}"


@pytest.mark.parametrize("fail", [KeyboardInterrupt, ValueError])
def test_a_work_folder_with_nothing_finished_is_removed(tmp_path, monkeypatch, capsys, fail):
    """Interrupted or failed before the first block finished: the work folder holds only its stamp,
    and is removed rather than offered for --resume."""
    _block_raises(monkeypatch, fail("no block finished"), at=1)
    out = tmp_path / "res"
    code = main(["simulate", *SMALL, "--out", str(out)])
    err = one_line(capsys)
    assert not (tmp_path / ".res.work").exists() and not out.exists()
    if fail is KeyboardInterrupt:
        assert code == 130 and err.endswith(f"no result folder was written to {out} and nothing was kept")
    else:
        assert code == 2 and err == "savic simulate: error: no block finished"


def test_an_error_after_finished_blocks_says_they_are_kept(tmp_path, monkeypatch, capsys):
    _block_raises(monkeypatch, MemoryError("Unable to allocate 745. GiB for an array with shape "
                                                  "(100000000000,) and data type float64"))
    out = tmp_path / "res"
    assert main(["simulate", *SMALL, "--scaling", "both", "--out", str(out)]) == 2
    # numpy's size keeps its unit: "745." is a number, not the end of a sentence
    assert one_line(capsys) == (
        "savic simulate: error: out of memory (unable to allocate 745. GiB for an array with shape "
        "(100000000000,) and data type float64): reduce runs, clients or dim (the finished blocks are kept in "
        f"{tmp_path / '.res.work'}/; --resume reuses them)")


def test_a_resumed_run_that_fails_says_its_blocks_are_kept(tmp_path, monkeypatch, capsys):
    """--resume opens the folder left by the interrupted run: after an error the finished blocks
    (the earlier ones and this invocation's) are still there, and the message says so; a folder
    this invocation refused to open (another config's) is not offered."""
    _block_raises(monkeypatch, KeyboardInterrupt)
    out, work = tmp_path / "res", tmp_path / ".res.work"
    assert main(["simulate", *SMALL, "--scaling", "both", "--out", str(out)]) == 130
    capsys.readouterr()
    _block_raises(monkeypatch, ValueError("the second block failed"), at=1)  # the first is kept, not run
    assert main(["simulate", *SMALL, "--scaling", "both", "--out", str(out), "--resume"]) == 2
    assert one_line(capsys) == (f"savic simulate: error: the second block failed (the finished blocks are kept in "
                                f"{work}/; --resume reuses them)")
    assert main(["simulate", *SMALL, "--scaling", "both", "--steps", "7", "--out", str(out), "--resume"]) == 2
    assert one_line(capsys) == f"savic simulate: error: cannot resume: {work} holds an unfinished run of a different config"
    assert work.is_dir()


def test_an_interrupt_before_the_work_folder_is_opened_does_not_offer_it(tmp_path, monkeypatch, capsys):
    """A leftover work folder of another config, and the run stopped before it replaced it: the
    folder is left as it was and not offered for --resume (which would refuse it)."""
    import savic_theory.experiment as experiment

    _block_raises(monkeypatch, KeyboardInterrupt)
    out, work = tmp_path / "res", tmp_path / ".res.work"
    assert main(["simulate", *SMALL, "--scaling", "both", "--out", str(out)]) == 130
    capsys.readouterr()
    before = sorted(p.name for p in work.rglob("*"))

    def interrupted(cfg):
        raise KeyboardInterrupt

    monkeypatch.setattr(experiment, "build_problem", interrupted)
    assert main(["simulate", *SMALL, "--seed", "7", "--out", str(out)]) == 130
    assert one_line(capsys) == (f"savic simulate: interrupted; no result folder was written to {out}; {work}/ from "
                                "an earlier run is left as it was")
    assert sorted(p.name for p in work.rglob("*")) == before


def test_a_stamp_cut_short_marks_a_work_folder_of_savic(tmp_path, capsys):
    """A run killed while writing its first stamp leaves only ``.config.sha.*.part``: the next
    run recognises the folder as savic's and replaces it."""
    work = tmp_path / ".res.work"
    work.mkdir()
    (work / ".config.sha.abc123.part").write_text("")
    assert main(["simulate", *SMALL, "--out", str(tmp_path / "res")]) == 0
    assert not work.exists() and (tmp_path / "res" / "summary.json").is_file()


def test_a_later_run_clears_what_a_killed_one_left_beside_out(tmp_path, capsys):
    """SIGKILL (no cleanup runs) while the result folder was built leaves ``.res.XXXXXXXX.part``;
    the next run into the same --out removes it, and a stale ``.old`` beside an existing folder
    too. Hidden folders of other result folders (``res.x``) are left alone."""
    out = tmp_path / "res"
    assert main(["simulate", *SMALL, "--out", str(out)]) == 0
    part, old = tmp_path / ".res.k3x_9a0q.part", tmp_path / ".res.7bq2mz1w.old"
    others = [tmp_path / ".res.x.k3x_9a0q.part", tmp_path / ".resx.k3x_9a0q.part"]
    for folder in (part, old, *others):
        folder.mkdir()
        (folder / "history.csv").write_text("partial")
    assert main(["simulate", *SMALL, "--out", str(out)]) == 0
    assert not part.exists() and not old.exists() and all(o.exists() for o in others)
    assert (out / "summary.json").is_file()
    capsys.readouterr()


def test_a_run_killed_between_the_two_moves_gets_its_old_folder_back(tmp_path, capsys):
    """Killed after moving the earlier result aside and before moving the new one in: only
    ``.res.XXXXXXXX.old`` is left, a complete result, which the next run restores before it
    writes (so a run that then fails loses nothing)."""
    out = tmp_path / "res"
    assert main(["simulate", *SMALL, "--out", str(out)]) == 0
    earlier = (out / "history.csv").read_text()
    os.replace(out, tmp_path / ".res.7bq2mz1w.old")
    with atomic_dir(out) as tmp:
        assert (out / "history.csv").read_text() == earlier  # back while the new folder is built
        (tmp / "config.toml").write_text("")
        (tmp / "summary.json").write_text("{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["res"]
    capsys.readouterr()


def test_sigterm_ends_a_command_like_an_interrupt(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "res"
    proc = subprocess.Popen([sys.executable, "-m", "savic_theory", "simulate", "--steps", "100000000", "--runs", "2",
                             "--scaling", "global", "--no-progress", "--out", str(out)],
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (tmp_path / ".res.work").exists() and time.monotonic() < deadline:  # the run has begun
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    err = proc.communicate(timeout=60)[1].strip()
    assert proc.returncode == 143, err
    assert err == f"savic simulate: terminated; no result folder was written to {out} and nothing was kept"
    assert not (tmp_path / ".res.work").exists() and not out.exists()


@pytest.mark.parametrize("error", [ImportError("loading data sets needs scikit-learn: pip install "
                                               "'savic-theory[data]'"),
                                   OverflowError("Python int too large to convert to C long")])
def test_import_and_overflow_errors_are_one_line(monkeypatch, capsys, error):
    def fails(args):
        raise error

    monkeypatch.setattr("savic_theory.cli.simulate.run", fails)
    assert main(["simulate", *SMALL]) == 2
    assert one_line(capsys) == f"savic simulate: error: {error}"


@pytest.mark.parametrize("error", [RuntimeError("boom"), NameError("name 'boom' is not defined"),
                                   AttributeError("'NoneType' object has no attribute 'boom'")])
def test_an_internal_error_keeps_its_traceback_and_exits_3(monkeypatch, capsys, error):
    """An exception that no input explains is a bug: its traceback, then a last line saying so,
    and status 3, apart from 1 (`savic verify` found a bound violated) and 2 (bad input)."""
    def fails(args):
        raise error

    monkeypatch.setattr("savic_theory.cli.simulate.run", fails)
    assert main(["simulate", *SMALL]) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0] == "Traceback (most recent call last):" and f"{type(error).__name__}: {error}" in err
    assert err[-1] == (f"savic simulate: internal error, a bug in savic ({type(error).__name__}: {error}; "
                       "the traceback above shows where)")


# ----------------------------------------------------------------------------- other messages
def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"savic {savic_theory.__version__}"


def test_unknown_option_is_reported_by_its_subcommand(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["simulate", "--bogus"])
    assert exc.value.code == 2
    assert one_line(capsys).startswith("savic simulate: error: unrecognized arguments: --bogus (see 'savic simulate")


def test_bench_json_checked_first_and_parents_made_as_for_out(tmp_path, capsys):
    tiny = ["bench", "--runs", "1", "--clients", "2", "--dim", "2", "--steps", "2", "--repeats", "1", "--no-progress"]
    assert main([*tiny, "--json", str(tmp_path)]) == 2
    assert f"--json {tmp_path} is a folder; name a file to write" in one_line(capsys)
    assert main([*tiny, "--json", ""]) == 2
    assert "--json must name a file to create, got ''" in one_line(capsys)
    target = tmp_path / "new" / "b.json"
    assert main([*tiny, "--json", str(target)]) == 0
    assert target.is_file() and f"measurements written to {target}" in capsys.readouterr().err


@pytest.mark.parametrize("command", [["simulate", "--steps", "5", "--runs", "1"], ["verify", "--suite", "quick"]])
def test_a_foreign_folder_named_like_a_work_folder_is_not_deleted(tmp_path, capsys, command):
    """``.<out>.work`` is replaced only when savic made it (its stamp is there) or it is empty."""
    out = tmp_path / "res"
    foreign = tmp_path / ".res.work"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    assert main([*command, "--no-progress", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "is not a work folder of savic" in err
    assert (foreign / "notes.txt").read_text() == "mine" and not out.exists()


def test_an_interrupt_while_the_command_starts_is_one_line(monkeypatch, capsys):
    """Ctrl-C during the subcommands' imports (NumPy, SciPy: the first fraction of a second) is
    one line and status 130; the package itself imports them only on first use, so that
    ``savic`` reaches ``main`` almost at once (before, a traceback from inside ``import scipy``)."""
    import subprocess
    import sys

    import savic_theory.cli as cli

    def interrupted():
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "build_parser", interrupted)
    assert main(["simulate"]) == 130
    err = capsys.readouterr().err
    assert err == "savic: interrupted before the command started; nothing was written\n"
    probe = "import sys, savic_theory.cli; print(sorted(m for m in ('numpy', 'scipy') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    assert savic_theory.Quadratic.__name__ == "Quadratic" and "simulate" in dir(savic_theory)
