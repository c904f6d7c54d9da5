"""Labeling the candidate queue with a reference calculator (any ASE calculator; DFT in practice).

Each pending box is relaxed if it is not yet (with the model it was cut with), evaluated by the
reference (energy, forces, and stress for periodic boxes), appended to `labeled.extxyz` under
the keys MACE trains on (REF_energy, REF_forces, REF_stress), and moved to `done/`. The
calculations run in this process, one at a time, or on the workers of a Dask cluster
(workers.py); the queue's files are written by the labeler alone.

Exactly once, under faults:
- a labeler works only on boxes it has claimed (claims.py), so any number of labelers, on one
  host or several sharing the filesystem, can work one queue;
- a calculation that raises, whose worker dies, or that overruns `timeout` is retried, up to
  `retries` times, then the box goes to `failed/` with the reason; so does a box whose labels
  are not finite, or that fails a quality gate after its relaxation, at once;
- a labeler killed at any point leaves claims that the next labeler on its host recognises as
  stale and takes over; the dataset, read under its lock before every append (dataset.py),
  never receives a box twice nor a frame after a torn one.
A write that fails (a full disk) stops the labeler with `QueueWriteFailed`, the box pending.
"""

from __future__ import annotations

import hashlib
import signal
import threading
import time
import warnings
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

from ase import Atoms
from ase.calculators.calculator import Calculator
from distributed.scheduler import KilledWorker
from tqdm.auto import tqdm

from ..common.trusted_pickles import ModelFileChanged
from ..extraction.candidates import CandidateQueue, CorruptBox, extxyz_text, read_box
from ..extraction.extractor import limits_of, relax_and_assess
from ..extraction.relaxation import calculator_from_files
from .claims import Claims, Holder
from .dataset import LabeledDataset
from .reference import Reference, ReferenceFailed, non_finite_labels, reference_labels
from .workers import InProcess, check_pool_settings, dask_log_to, labeling_pool

DEFAULT_RETRIES = 2


class QueueWriteFailed(RuntimeError):
    """Filing a box failed (e.g. a full disk): the box stays pending and the dataset whole."""


class RelaxationModelMissing(ValueError):
    """The model a box must be relaxed with is gone or changed: the labeler stops."""


class TornFrameCut(UserWarning):
    """The dataset ended in a frame torn by a kill in mid-append; it was cut off and kept."""


@contextmanager
def interrupts_deferred():
    """Hold Ctrl-C, and SIGTERM where Python handles it (the mdmonitor command), until the
    block ends, so a box is filed and counted as one step; then raise KeyboardInterrupt for
    Ctrl-C (whatever handler a library installed, e.g. dask_jobqueue's sys.exit) or run the
    SIGTERM handler."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)
            if callable(signal.getsignal(number))}
    received = []
    for number in held:
        signal.signal(number, lambda *caught: received.append(caught))
    try:
        yield
    finally:
        for number, handler in held.items():
            signal.signal(number, handler)
    if received:
        number, frame = received[0]
        if number == signal.SIGINT:
            raise KeyboardInterrupt
        held[number](number, frame)


@dataclass
class BoxOutcome:
    """What became of one box on a worker: labeled, or failed with a reason (not retried)."""

    box: Atoms
    failure: str = ""
    relaxed: bool = False


_RELAXERS: dict[str, Calculator] = {}  # this process's relaxation calculators, by model files


def relaxer(files: list[str], sha256: list[str], name: str) -> Calculator:
    """The calculator of the model files a box is relaxed with, loaded once per process and
    only if each file still has the recorded SHA-256 (loading a model runs its pickled code)."""
    key = ";".join(files + sha256)
    if len(sha256) != len(files):  # (a box edited by hand: no file may load unchecked)
        raise RelaxationModelMissing(f"box '{name}' records {len(files)} model files {files} "
                                     f"but {len(sha256)} SHA-256 recorded for them: give the "
                                     "model with --model")
    if key not in _RELAXERS:
        for path in files:
            if not Path(path).is_file():
                raise RelaxationModelMissing(
                    f"box '{name}' was cut with model '{path}', which no longer exists: give "
                    "the model with --model")
        try:
            _RELAXERS[key] = calculator_from_files(files, sha256=sha256)
        except ModelFileChanged as err:
            raise RelaxationModelMissing(
                f"model '{err.path}' has changed since box '{name}' was cut (SHA-256 "
                f"{err.found}, recorded {err.expected}); it was not loaded: give the model with "
                "--model") from err
    return _RELAXERS[key]


def label_box(path: str, reference: Reference | Calculator, reference_name: str,
              relax_models: tuple[list[str], list[str]] | None) -> BoxOutcome:
    """Relax (if the box asks for it) and label the box file `path`: what a worker runs.

    relax_models: the model files and their SHA-256 to relax with, instead of those recorded in
    the box. The reference raising is ReferenceFailed; an unreadable box is CorruptBox.
    """
    box = read_box(path)
    box.info.pop("failure", None)  # (of a box moved back from failed/ to try again)
    name = Path(path).name
    relaxed = box.info.get("relaxation") == "pending"
    if relaxed:
        files, hashes = relax_models or (
            [f for f in str(box.info.get("model_files", "")).split(";") if f],
            str(box.info.get("model_sha256", "")).split(";"))
        if not files:
            raise RelaxationModelMissing(f"box '{name}' needs its buffer relaxed but records "
                                         "no model files: give the model with --model")
        failures = relax_and_assess(box, relaxer(files, hashes, name), limits_of(box),
                                    float(box.info["core_radius"]))
        if failures:
            return BoxOutcome(box, "; ".join(failures), relaxed)
    calculator = reference.calculator() if isinstance(reference, Reference) else reference
    labeled = reference_labels(box, calculator, name, reference_name)
    bad = non_finite_labels(labeled)
    if bad:
        return BoxOutcome(box, f"reference gave non-finite {', '.join(bad)}", relaxed)
    return BoxOutcome(labeled, "", relaxed)


def file_sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# what relaxing a box's border imports: torch and MACE (5 s of CPU)
RELAXATION_MODULE = "mdmonitor.estimators.mace_model"


def open_pool(workers: int | None = None, threads_per_worker: int = 1,
              scheduler: str | None = None, log_file: str | Path | None = None,
              timeout: float | None = None):
    """Where boxes are labeled (workers.labeling_pool), the Dask workers importing this module
    as they start; `close()` it when done. With the labeler's `timeout` they also import torch
    and MACE as they start, which would otherwise count against the first box that needs its
    border relaxed."""
    preload = (__name__,) + ((RELAXATION_MODULE,) if timeout is not None else ())
    return labeling_pool(workers, threads_per_worker, scheduler, preload=preload,
                         log_file=log_file)


@dataclass
class LabelingSummary:
    """What one run of a labeler did; `started` and `ended` (s since the epoch) bound the time
    from its workers being ready to its last box filed; `startup_seconds` is what starting them
    took before (a Dask cluster's workers; 0 for a pool it was given, or this process)."""

    labeled: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    retried: dict[str, str] = field(default_factory=dict)  # last reason of each retried box
    taken_over: dict[str, str] = field(default_factory=dict)  # box: the dead labeler's claim
    started: float = float("nan")
    ended: float = float("nan")
    startup_seconds: float = 0.0

    @property
    def seconds(self) -> float:
        return self.ended - self.started


@dataclass
class InFlight:
    name: str
    started: float


class Labeler:
    """Labels the boxes of one queue with `reference`.

    reference: a `Reference` ("module:Class" and parameters, created where the boxes are
      labeled) or an ASE calculator (sent to the workers as it is: it must pickle).
    relax_models: MACE model files to relax buffers with, instead of those recorded in each box
      (which must still have the recorded SHA-256).
    workers / threads_per_worker / scheduler: label on a Dask LocalCluster of `workers` worker
      processes, or on the cluster of a running `scheduler` (address); by default, in this
      process, one box at a time.
    retries: how often a box whose calculation raised, whose worker died or that overran
      `timeout` (s; needs workers) is tried again before it goes to failed/.
    dask_log: a file that what Dask logs (a failed calculation's "Compute Failed" and traceback,
      a restarted worker, ...) goes to instead of stderr while the labeler runs: that of this
      process and of the LocalCluster's workers (those of a `scheduler` log where they always
      do). None: Dask's logging is left as it is.
    say: called with one line for each retry and each box that fails (box, attempt, reason).
    pool: an open pool (`open_pool`) to label on instead, left open after `run` (one cluster
      for the queues of several labelers in turn, as `mdmonitor learn` labels its generations).
    on_labeled: called with the names of the boxes labeled since its last call, after each
      batch of results is filed (e.g. to refit a calibration on the dataset, `refit.py`).
    """

    def __init__(self, queue, reference: Reference | Calculator, relax_models=None,
                 reference_name: str = "", *, workers: int | None = None,
                 threads_per_worker: int = 1, scheduler: str | None = None,
                 retries: int = DEFAULT_RETRIES, timeout: float | None = None,
                 dask_log: str | Path | None = None, say=None, pool=None, on_labeled=None):
        self.queue = queue if isinstance(queue, CandidateQueue) else CandidateQueue(queue)
        self.reference = reference
        self.reference_name = reference_name or (
            reference.name if isinstance(reference, Reference) else type(reference).__name__)
        self.relax_models = None
        if relax_models:
            files = [str(Path(f).resolve()) for f in relax_models]
            self.relax_models = (files, [file_sha256(f) for f in files])
        if retries < 0:
            raise ValueError(f"retries must be 0 or more, got {retries}")
        if timeout is not None and not timeout > 0:
            raise ValueError(f"timeout must be a positive number of seconds, got {timeout}")
        if pool is None:
            check_pool_settings(workers, threads_per_worker, scheduler, timeout)
        self.pool = pool
        self.pool_settings = dict(workers=workers, threads_per_worker=threads_per_worker,
                                  scheduler=scheduler)
        self.retries, self.timeout = retries, timeout
        self.dask_log = dask_log
        self.say = say or (lambda line: None)
        self.on_labeled = on_labeled
        self.claims = Claims(self.queue.root)
        self.dataset = LabeledDataset(self.queue.dataset)
        self.summary = LabelingSummary()

    def run(self, watch: bool = False, poll: float = 2.0, progress: bool = True,
            until: str | Path | None = None) -> LabelingSummary:
        """Label every pending box; with `watch`, keep polling for new ones until interrupted,
        or until the file `until` exists: then label what is pending and return (an MD run
        creates it when it ends, so that the boxes it wrote last are labeled too)."""
        on_dask = (not isinstance(self.pool, InProcess) if self.pool is not None else
                   any(self.pool_settings[key] is not None for key in ("workers", "scheduler")))
        with dask_log_to(self.dask_log) if on_dask and self.dask_log else nullcontext():
            return self._run(watch, poll, progress, None if until is None else Path(until))

    def _run(self, watch: bool, poll: float, progress: bool,
             until: Path | None) -> LabelingSummary:
        with self._filing(self.queue.dataset.name):
            self._catch_up_with_dataset()
        self.claims.forget_finished({p.name for p in self.queue.boxes("pending")})
        opening = time.time()
        pool = (open_pool(**self.pool_settings, log_file=self.dask_log, timeout=self.timeout)
                if self.pool is None else self.pool)
        self.summary.started = time.time()
        if self.pool is None:
            self.summary.startup_seconds = self.summary.started - opening
        running: dict = {}
        # boxes filed (labeled or failed) against boxes taken: a retried box stays one box
        filed_before = self._filed()
        bar = tqdm(desc="labeling", unit="box", disable=not progress)
        try:
            while True:
                # (looked for before the queue is read: a box written before it is seen)
                finishing = not watch or (until is not None and until.exists())
                free = self._submit(pool, running)
                bar.total = bar.n + len(running) + free
                bar.refresh()
                if not running and free and pool.slots == 0:  # workers (re)starting
                    pool.wait_for_slots()
                    continue
                if not running:
                    if finishing:
                        return self.summary
                    time.sleep(poll)
                    continue
                labeled_before = len(self.summary.labeled)
                for future in pool.wait(running, timeout=self._wait(running, poll)):
                    self._collect(future, running.pop(future).name)
                if self.on_labeled is not None and len(self.summary.labeled) > labeled_before:
                    self.on_labeled(self.summary.labeled[labeled_before:])
                for future in self._overdue(running):
                    pool.abandon(future)
                    name = running.pop(future).name
                    try:
                        self._attempt_failed(name, f"no result within the timeout of "
                                                   f"{self.timeout:g} s (its worker was killed)")
                    finally:
                        self.claims.release(name)
                bar.update(self._filed() - filed_before - bar.n)
        finally:
            self.summary.ended = time.time()
            bar.close()
            for future, flight in running.items():  # left pending, for this labeler or another
                future.cancel()
                self.claims.release(flight.name)
            if pool is not self.pool:
                pool.close()

    def _filed(self) -> int:
        """Boxes this labeler has filed in done/ or failed/."""
        return len(self.summary.labeled) + len(self.summary.failed)

    def _submit(self, pool, running: dict) -> int:
        """Claim pending boxes and send them to free slots; the number of boxes left free."""
        busy = {flight.name for flight in running.values()}
        pending = [p for p in self.queue.boxes("pending") if p.name not in busy]
        for path in pending:
            if len(running) >= pool.slots:
                break
            if not self._claim(path):
                continue
            try:  # (in this process, the calculation runs here and Ctrl-C may stop it)
                future = pool.submit(label_box, str(path.resolve()), self.reference,
                                     self.reference_name, self.relax_models)
            except BaseException:
                self.claims.release(path.name)
                raise
            running[future] = InFlight(path.name, time.monotonic())
            busy.add(path.name)
        return len({p.name for p in pending} - busy - self.claims.claimed())

    def _claim(self, path: Path) -> bool:
        """Claim pending box `path`, if no running labeler holds it and it is still to label."""
        name = path.name
        taken = self.claims.take(name)
        if taken is False:
            return False
        if isinstance(taken, Holder):
            self.summary.taken_over[name] = str(taken)
            self.queue.log(name, "claim-taken-over", detail=f"from {taken}, no longer running")
        if self.queue.path("done", name).exists():  # filed before a kill, not yet unlinked
            path.unlink(missing_ok=True)
        if not path.exists():  # labeled meanwhile by another labeler
            self.claims.release(name)
            return False
        return True

    def _wait(self, running: dict, poll: float) -> float:
        if self.timeout is None:
            return poll
        first = min(flight.started for flight in running.values())
        return max(0.0, min(poll, first + self.timeout - time.monotonic()))

    def _overdue(self, running: dict) -> list:
        if self.timeout is None:
            return []
        now = time.monotonic()
        return [f for f, flight in running.items() if now - flight.started > self.timeout]

    def _collect(self, future, name: str) -> None:
        """File the result of one box's calculation, and give up its claim."""
        try:
            outcome = future.result()
        except RelaxationModelMissing:
            raise
        except CorruptBox as err:
            self._fail_unreadable(name, str(err))
        except KilledWorker:
            self._attempt_failed(name, "its worker died (killed, crashed or out of memory) "
                                       "while labeling it")
        except Exception as err:  # the reference raised; or the relaxation did
            reason = str(err) if isinstance(err, ReferenceFailed) else (
                f"{type(err).__name__}: {err}")
            self._attempt_failed(name, reason)
        else:
            self._file(name, outcome)
        finally:
            self.claims.release(name)

    def _file(self, name: str, outcome: BoxOutcome) -> None:
        with self._filing(name):
            if outcome.relaxed:
                self.queue.log(name, "relaxed", outcome.box)
            if outcome.failure:
                self._fail(name, outcome.box, outcome.failure)
                return
            self.dataset.append(name, extxyz_text(outcome.box))
            self._report_torn_frames()
            self.queue.move(name, outcome.box, "done", "labeled", detail=self.reference_name)
            self.summary.labeled.append(name)

    def _attempt_failed(self, name: str, reason: str) -> None:
        """Count a failed attempt at box `name`: retry it, or fail it once retries are spent."""
        path = self.queue.path("pending", name)
        try:
            box = read_box(path)
        except CorruptBox as err:
            self._fail_unreadable(name, str(err))
            return
        # a box that a user moved back from failed/ starts counting again
        attempts = 1 + (0 if "failure" in box.info else int(box.info.get("label_attempts", 0)))
        box.info.pop("failure", None)
        box.info.update(label_attempts=attempts, last_failure=reason)
        if attempts > self.retries:
            self._fail(name, box, f"{reason} (attempt {attempts} of {self.retries + 1})")
            return
        with self._filing(name):
            self.queue.write(box, name, "pending", "retry", detail=reason)
            self.summary.retried[name] = reason
        self.say(f"{name}: attempt {attempts} of {self.retries + 1} failed, retrying: {reason}")

    def _fail(self, name: str, box: Atoms, reason: str) -> None:
        box.info["failure"] = reason
        with self._filing(name):
            self.queue.move(name, box, "failed", "failed", detail=reason)
            self.summary.failed[name] = reason
        self.say(f"{name}: failed, moved to failed/: {reason}")

    def _fail_unreadable(self, name: str, reason: str) -> None:
        """Move an unreadable box file to failed/ as it is."""
        with self._filing(name):
            self.queue.move_unchanged(name, "failed", "failed", detail=reason)
            self.summary.failed[name] = reason
        self.say(f"{name}: failed, moved to failed/ as it is: {reason}")

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

    def _catch_up_with_dataset(self) -> None:
        """Read the boxes the dataset holds; cut a frame torn by a kill off it."""
        try:
            self.dataset.refresh()
        except ValueError as err:
            raise ValueError(f"labeled dataset '{self.queue.dataset}' is not readable extxyz: "
                             f"{err}") from err
        self._report_torn_frames()

    def _report_torn_frames(self) -> None:
        """Log and warn about the frames torn by a kill that the dataset cut off."""
        for kept in self.dataset.torn_kept:
            self.queue.log(self.queue.dataset.name, "torn-frame-cut", detail=str(kept))
            warnings.warn(f"'{self.queue.dataset}' ended in a frame torn in mid-append (a "
                          f"killed labeler): cut it off and kept its {kept.stat().st_size} "
                          f"bytes in '{kept}'; its box, still pending, is labeled again",
                          TornFrameCut, stacklevel=3)
        self.dataset.torn_kept.clear()
