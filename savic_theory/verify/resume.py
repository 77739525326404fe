"""The work folder of a resumable ``savic verify``: finished cases and searches, kept as they finish.

It follows ``savic run`` (:func:`savic_theory.experiment.run_experiment`): the folder is
``.<name>.work`` beside the result folder ``<name>`` and holds ``options.json`` (the options that
decide the numbers) and one file per finished piece, each written atomically:
``cases/<case>.npz`` (:meth:`CaseResult.save`) and ``searches/<rule>-<theorem>.json``
(:meth:`AdversarialResult.save`). A piece is reused only when it was made with the same
settings (the case's description; the search's keyword arguments), so a resumed run reports
the numbers of an uninterrupted one: every case and search is seeded, nothing depends on the
order in which they run. The folder is removed once the result folder is written.

Example
-------
>>> import tempfile
>>> from pathlib import Path
>>> from savic_theory.verify import Case, run_case
>>> out = Path(tempfile.mkdtemp()) / "verify"
>>> work = WorkArea(out, {"level": 0.99})
>>> work.open(resume=True)  # nothing to resume: starts afresh
False
>>> case = Case("demo", "identical", "quad-identical", "identity", H=2, steps=30, seeds=8)
>>> work.save_case(run_case(case))
>>> work.load_case(case).status
'pass'
>>> WorkArea(out, {"level": 0.95}).open(resume=True)  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
savic_theory.cli._common.UserError: cannot resume: --level differs from the unfinished run in ...
>>> work.remove()
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from .adversarial import AdversarialResult
from .checks import CaseResult
from .suite import Case

__all__ = ["WorkArea"]

#: bumped whenever what a saved case or search holds changes meaning (2: pooled tests, the
#: search's relative clip level), so that --resume does not mix results of two versions
CHECKS_VERSION = 2

#: options added since a work folder could first be saved, with the value a folder that lacks
#: one was run with (an older folder resumes when the new option is left at it)
ADDED_OPTIONS = {"min_spread": 1.0}


class WorkArea:
    """The folder ``.<name>.work`` beside the result folder ``out``, for ``options`` (a JSON-ready dict).

    ``options`` maps long-option names (``"level"``, ``"theorem"``) to their values; a resumed
    run must have the same ones.
    """

    def __init__(self, out: str | os.PathLike, options: dict):
        from ..cli._common import work_folder

        self.path = work_folder(out)
        self.options = json.loads(json.dumps(options))  # as read back from options.json

    def open(self, resume: bool) -> bool:
        """Prepare the folder; True when an unfinished run is continued.

        With ``resume``, an existing folder is continued after checking that its options are
        these (a :class:`~savic_theory.cli._common.UserError` names the first that differs) and
        a missing one means a fresh start. Without ``resume``, an existing folder is stale and is
        removed, as ``savic run`` does.
        """
        from ..cli._common import UserError, remove_stale_work, write_json

        stamp = self.path / "options.json"
        resumed = False
        if self.path.exists():
            if resume:
                if not stamp.is_file():
                    raise UserError(f"cannot resume: {self.path} holds an unfinished run of another command")
                saved = json.loads(stamp.read_text())
                if saved.get("checks_version") != CHECKS_VERSION:
                    raise UserError(f"cannot resume: the unfinished run in {self.path} was checked by another "
                                    "version of savic_theory's checks; rerun without --resume to start afresh")
                for key, value in self.options.items():
                    there = saved.get(key, ADDED_OPTIONS.get(key))
                    if there != value:
                        raise UserError(f"cannot resume: --{key.replace('_', '-')} differs from the unfinished run "
                                        f"in {self.path} ({_show(there)} there, {_show(value)} now); rerun "
                                        "with the same options, or without --resume to start afresh")
                resumed = True
            else:
                remove_stale_work(self.path)
        (self.path / "cases").mkdir(parents=True, exist_ok=True)
        (self.path / "searches").mkdir(exist_ok=True)
        write_json(stamp, {**self.options, "checks_version": CHECKS_VERSION})
        return resumed

    def load_case(self, case: Case) -> CaseResult | None:
        """The saved result of ``case``, or None when it has not finished (or was another case)."""
        path = self._case_path(case)
        if not path.is_file():
            return None
        try:
            return CaseResult.load(path, case)
        except ValueError:  # saved for a case of the same file name but other parameters: run it again
            return None

    def save_case(self, result: CaseResult) -> None:
        """Keep a finished case (atomically)."""
        result.save(self._case_path(result.case))

    def load_search(self, rule: str, theorem: str, settings: dict) -> AdversarialResult | None:
        """The saved search of ``rule`` and ``theorem`` made with ``settings``, or None."""
        path = self._search_path(rule, theorem)
        if not path.is_file():
            return None
        found, saved_settings = AdversarialResult.load(path)
        return found if saved_settings == json.loads(json.dumps(settings)) else None

    def save_search(self, result: AdversarialResult, settings: dict) -> None:
        """Keep a finished search with the keyword arguments it was made with (atomically)."""
        result.save(self._search_path(result.rule, result.theorem), settings)

    def remove(self) -> None:
        """Delete the folder (after the result folder is written)."""
        shutil.rmtree(self.path, ignore_errors=True)

    def _case_path(self, case: Case) -> Path:
        return self.path / "cases" / f"{_safe(case.name)}.npz"

    def _search_path(self, rule: str, theorem: str) -> Path:
        return self.path / "searches" / f"{_safe(rule)}-{_safe(theorem)}.json"


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name).strip("._") or "_"


def _show(value) -> str:
    if value is None:
        return "not given"
    if isinstance(value, list):
        return ",".join(map(str, value))
    return repr(value) if isinstance(value, str) else str(value)
