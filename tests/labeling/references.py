"""Reference calculators that misbehave on purpose, importable by Dask workers and by
`mdmonitor label --reference tests.labeling.references:CLASS`: EMT, except on the box named
by `victim` (the sum of its positions, A, to 1e-3), where it does what its name says."""

import os
import signal
import time

import numpy as np
from ase.calculators.emt import EMT


def position_sum(atoms) -> float:
    return round(float(np.sum(atoms.positions)), 3)


class Misbehaving(EMT):
    """EMT that misbehaves on the victim box (all boxes if victim is None) `times` times."""

    def __init__(self, victim=None, times=1_000_000, marker_dir=None, seconds=0.0, **kwargs):
        super().__init__(**kwargs)
        self.victim, self.times, self.marker_dir, self.seconds = victim, times, marker_dir, seconds

    def calculate(self, atoms=None, properties=("energy",), system_changes=()):
        if self.seconds:
            time.sleep(self.seconds)
        if (self.victim is None or position_sum(atoms) == self.victim) and self._count(atoms):
            self.misbehave()
        super().calculate(atoms, properties, system_changes)

    def _count(self, atoms) -> bool:
        """Whether this box has been misbehaved on fewer than `times` times (across processes)."""
        if self.marker_dir is None:
            return True
        marker = os.path.join(self.marker_dir, f"{position_sum(atoms)}.count")
        done = int(open(marker).read()) if os.path.exists(marker) else 0
        if done >= self.times:
            return False
        with open(marker, "w") as handle:
            handle.write(str(done + 1))
        return True

    def misbehave(self):
        pass


class Slow(Misbehaving):
    """EMT after `seconds` of sleep on every box."""


class Raises(Misbehaving):
    def misbehave(self):
        raise RuntimeError("SCF did not converge in 100 cycles")


class Dies(Misbehaving):
    def misbehave(self):
        os.kill(os.getpid(), signal.SIGKILL)


class Hangs(Misbehaving):
    def misbehave(self):
        time.sleep(3600)


class GivesNaN(Misbehaving):
    def calculate(self, atoms=None, properties=("energy",), system_changes=()):
        super().calculate(atoms, properties, system_changes)
        if position_sum(atoms) == self.victim:
            self.results["forces"][1, 2] = np.nan
