"""Labeling the candidate queue with a reference calculator (any ASE calculator; DFT in practice).

Each pending box is relaxed if it is not yet (with the model it was cut with), evaluated by the
reference (energy, forces, and stress for periodic boxes), appended to `labeled.extxyz` under
the keys MACE trains on (REF_energy, REF_forces, REF_stress), and moved to `done/`. Every step
is written atomically (the dataset is appended whole or not at all) and is safe to repeat, so an
interrupted labeler resumes where it stopped without labeling a box twice. A write that fails
(a full disk) stops the labeler with `QueueWriteFailed` and leaves the box pending; a frame torn
by a kill in mid-append is cut off the dataset when the labeler starts again.
"""

from __future__ import annotations

import ast
import importlib
import os
import signal
import threading
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import ase.io
import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator
from tqdm.auto import tqdm

from ..estimators.mace_model import ModelFileChanged
from .candidates import (
    CandidateQueue,
    CorruptBox,
    append_whole,
    cut_torn_tail,
    extxyz_text,
)
from .extractor import limits_of, relax_and_assess
from .relaxation import calculator_from_files


def reference_calculator(spec: str, parameters: dict | None = None) -> Calculator:
    """An ASE calculator from "module:Class" and keyword arguments, e.g. ase.calculators.emt:EMT."""
    module_name, _, class_name = spec.partition(":")
    if not module_name or not class_name:
        raise ValueError(f"reference {spec!r} must be given as module:Class, "
                         "e.g. ase.calculators.emt:EMT")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(f"cannot import module '{module_name}' of reference {spec!r}: "
                         f"{err}") from err
    factory = getattr(module, class_name, None)
    if factory is None:
        raise ValueError(f"module '{module_name}' has no '{class_name}' (reference {spec!r})")
    try:
        return factory(**(parameters or {}))
    except Exception as err:
        raise ValueError(f"cannot create reference {spec} with {parameters or {}}: {err}") from err


def parse_parameters(items) -> dict:
    """KEY=VALUE strings to keyword arguments; values are Python literals, or else strings."""
    parameters = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key.isidentifier():
            raise ValueError(f"reference parameter {item!r} must look like KEY=VALUE")
        try:
            parameters[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            parameters[key] = value
    return parameters


@contextmanager
def interrupts_deferred():
    """Hold Ctrl-C until the block ends, so a box is filed and counted as one step."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = []
    previous = signal.signal(signal.SIGINT, lambda *_: received.append(True))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        raise KeyboardInterrupt


class ReferenceFailed(RuntimeError):
    """The reference calculator raised on a box; the box stays pending."""


class QueueWriteFailed(RuntimeError):
    """Filing a box failed (e.g. a full disk): the box stays pending and the dataset whole."""


class TornFrameCut(UserWarning):
    """The dataset ended in a frame torn by a kill in mid-append; it was cut off and kept."""


@dataclass
class LabelingSummary:
    labeled: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


class Labeler:
    """Labels the boxes of one queue with `reference`.

    relax_with: calculator for boxes still to be relaxed; by default the MACE model files
    recorded in each box, which must still have the recorded SHA-256.
    """

    def __init__(self, queue, reference: Calculator, relax_with: Calculator | None = None,
                 reference_name: str = ""):
        self.queue = queue if isinstance(queue, CandidateQueue) else CandidateQueue(queue)
        self.reference = reference
        self.reference_name = reference_name or type(reference).__name__
        self.relax_with = relax_with
        self._relaxers: dict[str, Calculator] = {}
        self._last_in_dataset: str | None = None
        self.summary = LabelingSummary()

    def run(self, watch: bool = False, poll: float = 2.0, progress: bool = True) -> LabelingSummary:
        """Label every pending box; with `watch`, keep polling for new ones until interrupted."""
        with self.queue.labeling_lock():
            self._cut_torn_frame()
            self._last_in_dataset = self._dataset_tail()
            bar = tqdm(desc="labeling", unit="box", disable=not progress)
            try:
                while True:
                    pending = self.queue.boxes("pending")
                    if pending:
                        bar.total = bar.n + len(pending)
                        bar.refresh()
                    for path in pending:
                        self.label(path)
                        bar.update()
                    if not watch:
                        return self.summary
                    time.sleep(poll)
            finally:
                bar.close()

    def label(self, path: Path) -> None:
        """Relax (if needed), label and file one pending box."""
        name = path.name
        if self.queue.path("done", name).exists():  # labeled before an interruption
            path.unlink(missing_ok=True)
            return
        try:
            box = self.queue.read(path)
        except CorruptBox as err:
            self._fail_unreadable(path, str(err))
            return
        if box.info.get("relaxation") == "pending":
            failures = relax_and_assess(box, self._relaxer(box, name), limits_of(box),
                                        float(box.info["core_radius"]))
            if failures:
                self._fail(name, box, "; ".join(failures))
                return
            with self._filing(name):
                self.queue.write(box, name, "pending", "relaxed")
        labeled = self._reference_labels(box, name)
        bad = [k for k in ("REF_energy", "REF_stress") if k in labeled.info
               and not np.all(np.isfinite(labeled.info[k]))]
        if not np.all(np.isfinite(labeled.arrays["REF_forces"])):
            bad.append("REF_forces")
        if bad:
            self._fail(name, box, f"reference gave non-finite {', '.join(bad)}")
            return
        with self._filing(name):
            if self._last_in_dataset != name:
                append_whole(self.queue.dataset, extxyz_text(labeled))
                self._last_in_dataset = name
            self.queue.move(name, labeled, "done", "labeled", detail=self.reference_name)
            self.summary.labeled.append(name)

    def _reference_labels(self, box: Atoms, name: str) -> Atoms:
        atoms = Atoms(box.numbers, box.positions, cell=box.cell, pbc=box.pbc)
        atoms.calc = self.reference
        try:
            energy = atoms.get_potential_energy()
            forces = atoms.get_forces()
            stress = atoms.get_stress(voigt=True) if atoms.pbc.all() else None
        except Exception as err:
            raise ReferenceFailed(f"reference {self.reference_name} failed on box '{name}' "
                                  f"(left in pending/): {type(err).__name__}: {err}") from err
        labeled = box.copy()
        labeled.info.update(box=name, REF_energy=float(energy), labeled_with=self.reference_name,
                            config_type=f"mdmonitor-{box.info.get('strategy', 'box')}")
        if stress is not None:
            labeled.info["REF_stress"] = np.asarray(stress, dtype=float)
        labeled.arrays["REF_forces"] = np.asarray(forces, dtype=float)
        return labeled

    def _relaxer(self, box: Atoms, name: str) -> Calculator:
        if self.relax_with is not None:
            return self.relax_with
        files = [f for f in str(box.info.get("model_files", "")).split(";") if f]
        hashes = str(box.info.get("model_sha256", "")).split(";")
        if not files:
            raise ValueError(f"box '{name}' needs its buffer relaxed but records no model "
                             "files: give the model with --model")
        key = ";".join(files)
        if key not in self._relaxers:
            for path in files:
                if not Path(path).is_file():
                    raise FileNotFoundError(f"box '{name}' was cut with model '{path}', which "
                                            "no longer exists: give the model with --model")
            try:  # each file's bytes are hashed, and loaded only if they are the recorded ones
                self._relaxers[key] = calculator_from_files(files, sha256=hashes)
            except ModelFileChanged as err:
                raise ValueError(f"model '{err.path}' has changed since box '{name}' was cut "
                                 f"(SHA-256 {err.found}, recorded {err.expected}); it was not "
                                 "loaded: give the model with --model") from err
        return self._relaxers[key]

    def _fail(self, name: str, box: Atoms, reason: str) -> None:
        box.info["failure"] = reason
        with self._filing(name):
            self.queue.move(name, box, "failed", "failed", detail=reason)
            self.summary.failed[name] = reason

    def _fail_unreadable(self, path: Path, reason: str) -> None:
        with self._filing(path.name):
            os.replace(path, self.queue.path("failed", path.name))
            self.queue.log(path.name, "failed", detail=reason)
            self.summary.failed[path.name] = reason

    @contextmanager
    def _filing(self, name: str):
        """The writes that file box `name`: Ctrl-C waits until they end, and an OSError (a full
        disk) stops the labeler with one line, the box left in pending/."""
        with interrupts_deferred():
            try:
                yield
            except OSError as err:
                raise QueueWriteFailed(
                    f"cannot file box '{name}' in queue '{self.queue.root}': {err}; the box "
                    f"stays in pending/ and '{self.queue.dataset.name}' is whole: free space "
                    "and run again") from err

    def _cut_torn_frame(self) -> None:
        """Cut a frame torn by a kill in mid-append off the dataset; keep it and say so."""
        try:
            kept = cut_torn_tail(self.queue.dataset)
            if kept is not None:
                self.queue.log(self.queue.dataset.name, "torn-frame-cut", detail=str(kept))
        except OSError as err:
            raise QueueWriteFailed(f"cannot cut the torn last frame off dataset "
                                   f"'{self.queue.dataset}': {err}") from err
        if kept is not None:
            warnings.warn(f"'{self.queue.dataset}' ended in a frame torn in mid-append (a "
                          f"killed labeler): cut it off and kept its {kept.stat().st_size} "
                          f"bytes in '{kept}'; its box, still pending, is labeled again",
                          TornFrameCut, stacklevel=3)

    def _dataset_tail(self) -> str | None:
        """Box name of the last frame of the labeled dataset (None if empty)."""
        if not self.queue.dataset.exists() or self.queue.dataset.stat().st_size == 0:
            return None
        try:
            return ase.io.read(self.queue.dataset, index=-1, format="extxyz").info.get("box")
        except Exception as err:
            raise ValueError(f"labeled dataset '{self.queue.dataset}' is not readable extxyz: "
                             f"{err}") from err
