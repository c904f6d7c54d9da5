"""Where boxes are labeled: in this process, one at a time, or on the workers of a Dask cluster
(`dask.distributed`): a LocalCluster of worker processes on this machine, or any running
scheduler, e.g. one that `dask-jobqueue` started on SLURM or PBS.

Both pools offer the same three calls the labeler needs: `submit` a function, `wait` for the
first results, and `abandon` a calculation that overran its time (its worker process is
restarted, the only way to stop a calculation stuck in compiled code).
"""

from __future__ import annotations

import concurrent.futures
import importlib
import logging
import os
import signal
import time
from contextlib import contextmanager

import psutil
from distributed.core import Status
from distributed.diagnostics.plugin import WorkerPlugin

from ..common.environment import restore_environ, saved_environ

# Memory a worker of our LocalCluster needs: one that has imported torch, MACE and ASE holds
# 0.5 GB (measured: 496 MB resident, 305 MB of it its own); the rest is for a box's relaxation
# model and a light reference. A DFT code needs more: give fewer workers.
WORKER_MEMORY_BYTES = 2**30
# Seconds our LocalCluster may go without a worker before we replace its nannies: a restarted
# worker imports torch and MACE and joins within 5-30 s, even on a loaded machine.
RESTART_GRACE = 120.0


class InProcess:
    """Labels in this process, one box at a time, as each is submitted (no timeout possible)."""

    slots = 1

    def submit(self, function, *args) -> concurrent.futures.Future:
        future = concurrent.futures.Future()
        try:
            future.set_result(function(*args))
        except Exception as err:
            future.set_exception(err)
        return future

    def wait(self, futures, timeout: float | None) -> set:
        return {f for f in futures if f.done()}

    def wait_for_slots(self) -> None:
        pass

    def close(self) -> None:
        pass


def kill_this_process() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


class Preload(WorkerPlugin):
    """Imports a module on every worker of a user's cluster as it starts (and restarts), so
    that importing torch and the model code is not charged to the first calculation's timeout
    (our own LocalCluster's workers import it before they join)."""

    def __init__(self, module: str):
        self.module = module

    def setup(self, worker) -> None:
        importlib.import_module(self.module)


DASK_LOGGER = "distributed"  # the parent of every logger of dask.distributed
LOG_FORMAT = "%(asctime)s %(process)d %(name)s - %(levelname)s - %(message)s"


def _file_handler(path: str) -> logging.Handler:
    handler = logging.FileHandler(path)  # (appends: lines of several processes stay whole)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    return handler


@contextmanager
def dask_log_to(path: str | os.PathLike):
    """Within the block, what dask.distributed logs in this process (its scheduler, nannies and
    client: "Restarting worker", ...) goes to file `path` instead of stderr; the logger's
    handlers and propagation are restored after."""
    logger = logging.getLogger(DASK_LOGGER)
    handlers, propagate = logger.handlers[:], logger.propagate
    handler = _file_handler(str(path))
    logger.handlers, logger.propagate = [handler], False
    try:
        yield
    finally:
        logger.handlers, logger.propagate = handlers, propagate
        handler.close()


class LogToFile(WorkerPlugin):
    """Sends what dask.distributed logs in a worker process of our own LocalCluster (a failed
    calculation's "Compute Failed" and traceback, ...) to file `path` instead of the labeler's
    stderr, which the worker processes share; set up again in each restarted worker."""

    def __init__(self, path: str | os.PathLike):
        self.path = str(path)

    def setup(self, worker) -> None:
        logger = logging.getLogger(DASK_LOGGER)
        logger.handlers, logger.propagate = [_file_handler(self.path)], False


class DaskWorkers:
    """Labels on Dask workers: a LocalCluster of `workers` processes (each calculation may use
    `threads_per_worker` threads: OMP_NUM_THREADS of the worker) or the cluster of `scheduler`;
    each worker imports the modules `preload` as it starts; the workers of our LocalCluster log
    to `log_file`, if given, instead of stderr.

    A worker that dies in mid-calculation fails that calculation at once (KilledWorker), so the
    labeler counts it as one attempt (a scheduler of our own is told to allow no silent
    retries; one of a user's allows what its configuration says).
    """

    def __init__(self, workers: int | None = None, threads_per_worker: int = 1,
                 scheduler: str | None = None, preload: tuple[str, ...] = (),
                 wait_for_workers: float = 300.0, connect_timeout: float = 30.0,
                 log_file: str | os.PathLike | None = None):
        from distributed import Client, LocalCluster

        self._environ: dict[str, str | None] = {}
        if scheduler is not None:
            self.cluster = None
            try:
                self.client = Client(scheduler, timeout=connect_timeout)
            except OSError as err:
                raise RuntimeError(f"cannot reach the Dask scheduler at '{scheduler}': "
                                   f"{err}") from err
        else:
            threads = str(threads_per_worker)
            self._environ = saved_environ(nanny_environ())  # (put back by close)
            try:
                self.cluster = LocalCluster(
                    n_workers=workers, threads_per_worker=1, processes=True,
                    # (a random port for the scheduler's web page: two labelers on one host
                    # would both want 8787)
                    dashboard_address=":0", scheduler_kwargs={"allowed_failures": 0},
                    env={"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads,
                         "OPENBLAS_NUM_THREADS": threads},
                    preload=list(preload))  # (imported before a worker joins)
            except BaseException:  # (its nannies may have set their variables already)
                restore_environ(self._environ)
                raise
            self.client = Client(self.cluster)
        self.patience = wait_for_workers
        self.restart_grace = RESTART_GRACE
        try:
            for module in preload if scheduler is not None else ():
                self.client.register_plugin(Preload(module), name=f"preload-{module}")
            if log_file is not None and self.cluster is not None:  # (a user's workers: theirs)
                self.client.register_plugin(LogToFile(log_file), name="mdmonitor-log")
            self.wait_for_slots()
        except BaseException:
            self.close()
            raise

    def wait_for_slots(self) -> None:
        """Wait until a worker is there (after a restart, or while a batch system starts them);
        our LocalCluster's nannies are replaced after each RESTART_GRACE s without a worker."""
        start = time.monotonic()
        deadline, renew = start + self.patience, start + self.restart_grace
        while self.slots == 0:
            now = time.monotonic()
            if now > deadline:
                raise RuntimeError(f"no Dask worker joined scheduler "
                                   f"'{self.client.scheduler.address}' within {self.patience:g} s")
            if self.cluster is not None and now > renew:
                self._replace_nannies(list(self.cluster.workers))
                renew = now + self.restart_grace
            time.sleep(0.2)

    @property
    def slots(self) -> int:
        """Calculations the cluster runs at once (its worker threads, as workers come and go)."""
        if self.cluster is not None:
            self._replace_nannies([name for name, nanny in self.cluster.workers.items()
                                   if nanny.status in (Status.closed, Status.failed)])
        return sum(self.client.nthreads().values())

    def _replace_nannies(self, names) -> None:
        """Start new workers in place of those of our LocalCluster's nannies `names`, and of
        nannies the cluster dropped. A nanny that loses a race with the scheduler while its
        worker dies closes instead of restarting it; one whose restart hangs stays open with
        no worker. And the cluster itself closes and drops a nanny whose worker has not come
        back `distributed.deploy.lost-worker-timeout` (15 s) after the scheduler lost it,
        counted from the first loss: a worker killed twice within that time (a calculation
        that overran its timeout twice) loses its nanny while the restart is under way, and
        the cluster, its spec unchanged, starts no other."""
        for name in names:
            nanny = self.cluster.workers.pop(name)
            if nanny.status not in (Status.closed, Status.failed):
                self.cluster.sync(nanny.close, timeout=5, reason="mdmonitor-no-worker")
        if set(self.cluster.worker_spec) - set(self.cluster.workers):
            self.cluster.scale(len(self.cluster.worker_spec))  # (starts a worker per spec without)

    def submit(self, function, *args):
        return self.client.submit(function, *args, pure=False)

    def wait(self, futures, timeout: float | None) -> set:
        from distributed import wait

        try:
            return set(wait(list(futures), timeout=timeout, return_when="FIRST_COMPLETED").done)
        except TimeoutError:
            return {f for f in futures if f.done()}

    def abandon(self, future) -> None:
        """Give up a calculation: cancel it and kill the worker process that runs it (a
        calculation stuck in compiled code cannot be stopped otherwise); its nanny starts a
        new one, as after any death of a worker."""
        running_on = [worker for worker, keys in self.client.processing().items()
                      if future.key in keys]
        future.cancel()
        if running_on:
            try:  # (the worker dies before it can answer)
                self.client.run(kill_this_process, workers=running_on)
            except Exception:
                pass

    def close(self) -> None:
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()
        restore_environ(self._environ)


def nanny_environ() -> list[str]:
    """The variables a LocalCluster's nannies set for good in the process that starts them,
    before they spawn a worker (Dask's pre-spawn environment: MALLOC_TRIM_THRESHOLD_,
    OMP_NUM_THREADS=1, ..., PYTHONHASHSEED, and __DASK_PARENT_PID)."""
    import dask

    return [*dask.config.get("distributed.nanny.pre-spawn-environ", {}), "PYTHONHASHSEED",
            "__DASK_PARENT_PID"]


def check_pool_settings(workers: int | None = None, threads_per_worker: int = 1,
                        scheduler: str | None = None, timeout: float | None = None) -> None:
    """ValueError if the settings of `labeling_pool` (and a labeler's `timeout`) do not go
    together: the checks `mdmonitor label` and `mdmonitor learn`'s [labeling] share."""
    if workers is not None and scheduler is not None:
        raise ValueError("give workers (a LocalCluster of our own) or scheduler (a running "
                         "Dask cluster), not both")
    if workers is None and scheduler is None:
        if timeout is not None:
            raise ValueError("a timeout needs workers (or a scheduler): a calculation in this "
                             "process cannot be stopped")
        return
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    if threads_per_worker < 1:
        raise ValueError(f"threads per worker must be at least 1, got {threads_per_worker}")
    if threads_per_worker > (os.cpu_count() or 1):
        raise ValueError(f"threads per worker {threads_per_worker} exceeds the "
                         f"{os.cpu_count()} cores of this machine")


def labeling_pool(workers: int | None = None, threads_per_worker: int = 1,
                  scheduler: str | None = None, preload: tuple[str, ...] = (),
                  log_file: str | os.PathLike | None = None):
    """Where to label: this process (no workers, no scheduler) or a Dask cluster whose workers
    import the modules `preload` as they start (and those of a LocalCluster log to `log_file`)."""
    check_pool_settings(workers, threads_per_worker, scheduler)
    if workers is None and scheduler is None:
        return InProcess()
    if workers is not None:
        check_local_resources(workers, threads_per_worker)
    return DaskWorkers(workers, threads_per_worker, scheduler, preload, log_file=log_file)


def check_local_resources(workers: int, threads_per_worker: int = 1) -> None:
    """ValueError, before any process starts, unless `workers` worker processes of
    `threads_per_worker` threads fit this machine: no more threads than cores (more only slow
    every calculation down and load the machine), and WORKER_MEMORY_BYTES of available memory
    for each worker (more would have the kernel kill workers, or the user's other jobs)."""
    cores = os.cpu_count() or 1
    if workers * threads_per_worker > cores:
        fits = max(cores // threads_per_worker, 1)
        threads = f" x {threads_per_worker} threads" if threads_per_worker > 1 else ""
        raise ValueError(f"--workers {workers}{threads} exceeds the {cores} cores of this "
                         f"machine: give --workers {fits} or fewer (or --scheduler, for "
                         "workers on other machines)")
    available = psutil.virtual_memory().available
    if workers * WORKER_MEMORY_BYTES > available:
        fits, gb = int(available // WORKER_MEMORY_BYTES), WORKER_MEMORY_BYTES / 2**30
        raise ValueError(f"--workers {workers} needs about {workers * gb:.0f} GB of memory "
                         f"({gb:.0f} GB each) but "
                         f"{available / 2**30:.1f} GB is available: "
                         + (f"give --workers {fits} or fewer" if fits else
                            "free memory, or label in this process (without --workers)"))
