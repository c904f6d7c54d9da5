"""Per-box claims, so that any number of labelers can work one queue: a box is labeled by the
labeler that holds its claim, `queue/claims/<box>.json`, and by no other.

A claim names its holder: the host, the process id and the process's start time. A labeler that
dies (kill -9, a crash, a reboot) leaves its claims behind; they are recognised as stale by a
labeler on the same host, which sees that no process with that id and start time runs there any
more, and reclaimed. A claim held on another host cannot be judged from here: it is reclaimed by
a labeler started on that host, or released with `release_host` when that host is known to be
gone. Claims are taken and broken under a lock file (`claims/.lock`), so two labelers never
hold the same box.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

from ..common.atomic_files import write_atomically


@dataclass(frozen=True)
class Holder:
    """A labeler process: host name, process id, process start time (s since the epoch)."""

    host: str
    pid: int
    started: float

    @classmethod
    def this_process(cls) -> "Holder":
        return cls(socket.gethostname(), os.getpid(), psutil.Process().create_time())

    def is_running(self) -> bool | None:
        """Whether this holder still runs (None: it runs on another host, which cannot tell)."""
        if self.host != socket.gethostname():
            return None
        try:
            return abs(psutil.Process(self.pid).create_time() - self.started) < 1e-3
        except psutil.NoSuchProcess:
            return False

    def __str__(self) -> str:
        return f"pid {self.pid} on {self.host}"


class Claims:
    """The claims of queue directory `root` (in `root/claims/`), taken by this process."""

    def __init__(self, root: Path):
        self.directory = Path(root) / "claims"
        self.directory.mkdir(parents=True, exist_ok=True)
        self.holder = Holder.this_process()

    def _path(self, name: str) -> Path:
        return self.directory / f"{name}.json"

    @contextmanager
    def _locked(self):
        with open(self.directory / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def holder_of(self, name: str) -> Holder | None:
        """Who holds box `name` (None if nobody; an unreadable claim counts as nobody's)."""
        try:
            return Holder(**json.loads(self._path(name).read_text()))
        except (FileNotFoundError, ValueError, TypeError):
            return None

    def claimed(self) -> set[str]:
        """The boxes someone holds a claim on (a running labeler or a dead one)."""
        return {path.name[:-len(".json")] for path in self.directory.glob("*.json")}

    def take(self, name: str) -> Holder | bool:
        """Claim box `name`: False if a running labeler holds it; True if it was free; the
        dead holder whose stale claim was taken over (its work on the box may be half done)."""
        with self._locked():
            path = self._path(name)
            taken_over: Holder | bool = True
            if path.exists():
                holder = self.holder_of(name)
                if holder is not None and holder != self.holder and holder.is_running() is not False:
                    return False
                taken_over = holder or True
            write_atomically(path, json.dumps(asdict(self.holder)))
            return taken_over

    def release(self, name: str) -> None:
        """Give up the claim on box `name` if this process holds it."""
        with self._locked():
            if self.holder_of(name) == self.holder:
                self._path(name).unlink(missing_ok=True)

    def release_host(self, host: str) -> list[str]:
        """Release every claim held on `host` (its labelers are known to be gone): the boxes."""
        released = []
        with self._locked():
            for path in sorted(self.directory.glob("*.json")):
                name = path.name[:-len(".json")]
                holder = self.holder_of(name)
                if holder is not None and holder.host == host:
                    path.unlink(missing_ok=True)
                    released.append(name)
        return released

    def forget_finished(self, pending: set[str]) -> None:
        """Remove the claims that dead labelers left on boxes no longer pending (killed after
        filing a box, before releasing its claim)."""
        with self._locked():
            for path in self.directory.glob("*.json"):
                name = path.name[:-len(".json")]
                holder = self.holder_of(name)
                if name not in pending and (holder is None or holder.is_running() is False):
                    path.unlink(missing_ok=True)
