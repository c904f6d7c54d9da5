"""Training the next models with mace-torch's own trainer, `mace_run_train`.

Each model is trained in its own work directory from a starting model given to mace as
`--foundation_model` (naive fine-tuning, no multihead replay): the current model itself
("finetune"), or a model of the same architecture with new random weights ("scratch", seed 002's
choice). So the architecture, cutoff, pair repulsion, E0s and scale/shift are those stored in the
model file; only the loss weights, learning rate, batch size and epochs come from the settings.
Every member has its own seed, hence its own weight initialisation and data order.

A trainer does not outlive the loop: on Linux the kernel kills it when the thread that started it
ends (PR_SET_PDEATHSIG), also when the loop is killed with SIGKILL; Ctrl-C or SIGTERM kill the
running trainers and start no further one. Each trainer holds an exclusive lock on
`<work_dir>.lock` (inherited, so the lock lives as long as the trainer does): a resumed run waits
for it, and refuses to clear a work directory that a trainer of a killed run still writes into.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from ..common.atomic_files import replaced_atomically
from ..common.trusted_pickles import FLAG
from ..estimators.mace_model import MaceModel

LOG_LINES_ON_FAILURE = 15
DEFAULT_LR = {"finetune": 0.01, "scratch": 0.01}
# one validation line of mace's log: "Initial: ..." (before training) or "Epoch N: ..."
VALIDATION_LINE = re.compile(r"(Initial|Epoch (\d+)): head: \S+, loss=\s*([-+0-9.eE]+),.*?"
                             r"RMSE_F=\s*([-+0-9.eE]+) meV / A")
KEPT_LINE = re.compile(r"Loaded Stage one model from epoch (\d+)")
LOCK_WAIT = 30.0  # s a resumed run waits for a trainer of the killed one to end
STOP_GRACE = 3.0  # s a trainer is given to end on SIGTERM before SIGKILL
NEW_WEIGHTS = threading.Lock()  # held while a model with new random weights is built


class TrainingFailed(RuntimeError):
    """mace_run_train exited non-zero; the message holds the end of its log."""


class TrainingStopped(RuntimeError):
    """The training was stopped (Ctrl-C, SIGTERM) before this model's trainer started."""


class TrainerStillRunning(RuntimeError):
    """A trainer of an earlier, killed run still holds the lock of a work directory."""


try:
    _PRCTL = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None
except (OSError, AttributeError):  # pragma: no cover
    _PRCTL = None
PR_SET_PDEATHSIG, SIGKILL = 1, int(signal.SIGKILL)


def _dying_with(parent: int):
    """What a trainer runs between fork and exec: ask the kernel for SIGKILL when the thread
    that started it ends (Linux PR_SET_PDEATHSIG; elsewhere the work directory's lock guards).
    It does no more than one ctypes call and getppid, as a child forked from threads should."""
    def request() -> None:
        if _PRCTL is not None:
            _PRCTL(PR_SET_PDEATHSIG, SIGKILL)
            if os.getppid() != parent:  # (the loop died before the request took effect)
                os._exit(1)
    return request


class Trainers:
    """The trainer processes of one `train_models`: `stop` kills the running ones and lets no
    further one start."""

    def __init__(self):
        self._lock = threading.Lock()
        self._running: set[subprocess.Popen] = set()
        self.stopped = False

    def start(self, argv: list, **options) -> subprocess.Popen:
        with self._lock:
            if self.stopped:
                raise TrainingStopped("the training was stopped before this model's trainer "
                                      "started")
            process = subprocess.Popen(argv, preexec_fn=_dying_with(os.getpid()), **options)
            self._running.add(process)
            return process

    def close(self) -> None:
        """Let no further trainer start; the running ones go on."""
        with self._lock:
            self.stopped = True

    def wait(self, process: subprocess.Popen) -> int:
        try:
            return process.wait()
        finally:
            with self._lock:
                self._running.discard(process)

    def stop(self) -> None:
        """Let no further trainer start, and end the running ones (SIGTERM, then SIGKILL)."""
        with self._lock:
            self.stopped = True
            running = list(self._running)
        for process in running:
            process.terminate()
        deadline = time.monotonic() + STOP_GRACE
        for process in running:
            try:
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def lock_file(work_dir: Path) -> Path:
    """The lock a trainer holds while it writes into `work_dir` (beside it, not inside)."""
    return work_dir.parent / f"{work_dir.name}.lock"


def _locked(work_dir: Path):
    """Open and lock `work_dir`'s lock file, waiting up to LOCK_WAIT s for a trainer of a killed
    run that still holds it; TrainerStillRunning names its pid."""
    work_dir.parent.mkdir(parents=True, exist_ok=True)
    handle = open(lock_file(work_dir), "a+")
    deadline = time.monotonic() + LOCK_WAIT
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return handle
        except BlockingIOError:
            if time.monotonic() > deadline:
                handle.seek(0)
                holder = handle.read().strip() or "unknown"
                handle.close()
                raise TrainerStillRunning(
                    f"a trainer of an earlier run (pid {holder}) still writes into "
                    f"'{work_dir}' after {LOCK_WAIT:g} s: stop it (kill {holder}) or let it "
                    "end, then run again") from None
            time.sleep(0.2)


def atomic_energies(model: MaceModel) -> dict[int, float]:
    """The model's isolated-atom energies E0 (eV) by atomic number, as mace's --E0s takes them."""
    module = model.module
    energies = module.atomic_energies_fn.atomic_energies.detach().reshape(-1)
    return {int(z): float(e) for z, e in zip(module.atomic_numbers, energies)}


def fresh_copy(model: MaceModel, path: Path, seed: int) -> None:
    """Write to `path` a model of `model`'s architecture, E0s and scale with new random weights."""
    from mace.tools.scripts_utils import extract_config_mace_model

    config = extract_config_mace_model(model.module)
    if "error" in config:
        raise ValueError(f"cannot train '{model.path}' from scratch: {config['error']}")
    # one model at a time (members train from threads): the seed is set on torch's global
    # generator, forked so that the caller's stream of random numbers is left as it was
    with NEW_WEIGHTS, torch.random.fork_rng():
        torch.manual_seed(seed)
        fresh = type(model.module)(**config).to(next(model.module.parameters()).dtype)
    with replaced_atomically(path) as temporary:
        torch.save(fresh, temporary)


def trainer_arguments(settings: dict, name: str, seed: int, work_dir: Path, start: Path,
                      e0s: dict, train_file: Path, valid_file: Path | None,
                      checkpoints: bool) -> list[str]:
    """The mace_run_train command line for one model (settings: the [training] section)."""
    lr = settings["lr"] or DEFAULT_LR[settings["mode"]]
    argv = [
        f"--name={name}", f"--seed={seed}", f"--work_dir={work_dir}",
        f"--train_file={train_file}", "--energy_key=REF_energy", "--forces_key=REF_forces",
        "--stress_key=REF_stress", "--compute_stress=True", "--loss=stress",
        f"--foundation_model={start}", "--multiheads_finetuning=False", f"--E0s={e0s}",
        f"--max_num_epochs={settings['epochs']}", f"--batch_size={settings['batch_size']}",
        f"--valid_batch_size={settings['batch_size']}", f"--lr={lr}",
        f"--energy_weight={settings['energy_weight']}",
        f"--forces_weight={settings['forces_weight']}",
        f"--stress_weight={settings['stress_weight']}",
        "--default_dtype=float64", "--device=cpu", "--save_cpu", "--plot=False"]
    argv += [f"--valid_file={valid_file}"] if valid_file else ["--valid_fraction=0.1"]
    if checkpoints:  # LTAU's training-error trajectories are evaluated from every epoch
        argv += ["--save_all_checkpoints", "--keep_checkpoints"]
    return argv + [str(arg) for arg in settings["extra_args"]]


def validation_by_epoch(text: str) -> dict[int, dict]:
    """The validation loss and force RMSE (eV/A) in mace's log `text`, by epoch (-1: before
    training)."""
    figures = {}
    for match in VALIDATION_LINE.finditer(text):
        epoch = -1 if match.group(1) == "Initial" else int(match.group(2))
        figures[epoch] = {"loss": float(match.group(3)),
                          "force_rmse": float(match.group(4)) / 1000}
    return figures


def training_record(log: Path) -> dict:
    """What one mace_run_train did, read from its log: the number of epochs, the epoch mace kept
    (its checkpoint of lowest validation loss, or the last epoch when every epoch's checkpoint is
    saved), and the validation loss and force RMSE (eV/A) before training and at that epoch."""
    text = log.read_text(errors="replace")
    figures = validation_by_epoch(text)
    kept = KEPT_LINE.search(text)
    kept_epoch = int(kept.group(1)) if kept else None
    start, at_kept = figures.get(-1, {}), figures.get(kept_epoch, {})
    return {"epochs": len([e for e in figures if e >= 0]), "kept_epoch": kept_epoch,
            "valid_loss_start": start.get("loss"),
            "valid_force_rmse_start": start.get("force_rmse"),
            "valid_loss_kept": at_kept.get("loss"),
            "valid_force_rmse_kept": at_kept.get("force_rmse")}


def run_mace_train(argv: list[str], log: Path, what: str, trainers: Trainers | None = None,
                   lock=None) -> None:
    """Run mace-torch's trainer (`mace_run_train` ARGV) in a child process, its output into
    `log`; TrainingFailed with the log's last lines if it fails. `what`: the model, for the
    message; `trainers`: the group it belongs to (stopped together); `lock`: an open locked
    file the trainer inherits and into which its pid is written."""
    trainers = trainers or Trainers()
    with open(log, "w") as handle:
        process = trainers.start(
            [sys.executable, "-m", "mace.cli.run_train", *argv], stdout=handle,
            stderr=subprocess.STDOUT, pass_fds=() if lock is None else (lock.fileno(),),
            # a child process of ours: mace loads its own model files (pickles we chose)
            env={**os.environ, FLAG: "1", "OMP_NUM_THREADS": os.environ.get(
                "OMP_NUM_THREADS", "1")})
        if lock is not None:
            lock.seek(0)
            lock.truncate()
            lock.write(str(process.pid))
            lock.flush()
        returncode = trainers.wait(process)
    if returncode != 0:
        tail = log.read_text(errors="replace").splitlines()[-LOG_LINES_ON_FAILURE:]
        raise TrainingFailed(f"mace_run_train failed (exit {returncode}) for {what}; "
                             f"last lines of {log}:\n" + "\n".join(tail))


def train_model(model: MaceModel, output: Path, work_dir: Path, settings: dict, seed: int,
                train_file: Path, valid_file: Path | None, checkpoints: bool = False,
                trainers: Trainers | None = None) -> Path:
    """Train the next version of `model` into `output` (written atomically; left alone if it
    exists). The log is `work_dir`/train.log; TrainingFailed with its last lines on failure;
    TrainerStillRunning if a trainer of a killed run still writes into `work_dir`."""
    if output.is_file():
        return output
    with _locked(work_dir) as lock:
        shutil.rmtree(work_dir, ignore_errors=True)  # a half-done training is started again
        work_dir.mkdir(parents=True)
        start = Path(model.path)
        if settings["mode"] == "scratch":
            start = work_dir / "initial.model"
            fresh_copy(model, start, seed)
        name = output.stem
        argv = trainer_arguments(settings, name, seed, work_dir, start, atomic_energies(model),
                                 train_file, valid_file, checkpoints)
        run_mace_train(argv, work_dir / "train.log", output.name, trainers, lock)
        with replaced_atomically(output) as temporary:
            shutil.copy2(work_dir / f"{name}.model", temporary)
    return output


def _cause(futures, first: Exception) -> Exception:
    """The failure that stopped the training: the first member's exception that is not a
    TrainingStopped (a partner that did not start because of it), else `first`."""
    failures = [f.exception() for f in futures if f.done() and not f.cancelled()]
    return next((e for e in failures if e is not None and not isinstance(e, TrainingStopped)),
                first)


def train_models(models: list[MaceModel], outputs: list[Path], work_dirs: list[Path],
                 settings: dict, seeds: list[int], train_file: Path, valid_file: Path | None,
                 checkpoints: bool = False, jobs: int = 1) -> list[Path]:
    """Train every model (`jobs` at a time, each on this process's OMP_NUM_THREADS, 1 unless
    set, e.g. by `mdmonitor --threads`); the first failure raises (not a partner's
    TrainingStopped that it caused), once the members already training have ended (their models
    are kept), and no further member starts. Ctrl-C (KeyboardInterrupt) or SystemExit kill the running trainers at once."""
    trainers = Trainers()

    def member(*args):
        if trainers.stopped:  # (a failure or Ctrl-C came first)
            raise TrainingStopped("the training was stopped before this model's turn")
        try:
            return train_model(*args, trainers=trainers)
        except BaseException:
            trainers.close()
            raise

    pool = ThreadPoolExecutor(max_workers=jobs)
    futures = [pool.submit(member, model, output, work_dir, settings, seed, train_file,
                           valid_file, checkpoints)
               for model, output, work_dir, seed in zip(models, outputs, work_dirs, seeds)]
    try:
        return [future.result() for future in futures]
    except BaseException as err:
        for future in futures:
            future.cancel()
        if not isinstance(err, Exception):
            trainers.stop()
            raise
        pool.shutdown(wait=True)  # (the cause, not a partner stopped because of it)
        raise _cause(futures, err) from None
    finally:
        try:
            pool.shutdown(wait=True)
        except BaseException:  # (Ctrl-C while a failed training's partners end)
            trainers.stop()
            pool.shutdown(wait=True)
            raise
