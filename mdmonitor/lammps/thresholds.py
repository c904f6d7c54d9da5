"""The file `fix mdmonitor ... threshold_file PATH` follows: the local-uncertainty thresholds at
which a calibration's expected local force error reaches an error target (eV/A), one per LAMMPS
atom type, written again whenever the calibration file changes.

    # fix mdmonitor threshold_file: local uncertainty at which the expected local force error
    # of run.json reaches 0.06 eV/A, per atom type (Cu Au)
    label calibration 3f2a9c1b7e04, element-power map, 0.06 eV/A
    cutoff 4.0
    thresholds 0.0512 0.0731

The fix reads it again at each monitored step and takes up changed bytes from that step on,
logging the label; the file is written atomically, so the fix never reads half of one.
"""

from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path

from ase.data import atomic_numbers

from ..common.atomic_files import write_atomically
from ..common.settings import positive_number
from ..monitor import CalibrationRefused
from ..quality.calibration import Calibration


def thresholds_text(calibration: Calibration, error: float, type_elements,
                    values: list[str]) -> str:
    """The threshold file of `calibration` for the expected local force error `error` (eV/A),
    atom types of the element symbols `type_elements` (type 1 first): `values`, its
    `lammps_threshold` (one value, or one per type)."""
    return (f"# fix mdmonitor threshold_file: local uncertainty at which the expected local force "
            f"error\n# of {calibration.source or 'the calibration'} reaches {error:g} eV/A, per "
            f"atom type ({' '.join(type_elements)})\n"
            f"label calibration {calibration.digest}, {calibration.form} map, {error:g} eV/A\n"
            f"cutoff {calibration.cutoff!r}\n"
            f"thresholds {' '.join(values)}\n")


class ThresholdFile:
    """Keeps the threshold file `path` that of the calibration file `calibration` for the
    expected local force error `error` (eV/A) and atom types of `type_elements` (symbols,
    type 1 first)."""

    def __init__(self, path: str | Path, calibration: str | Path, error: float, type_elements):
        self.path = Path(path)
        self.calibration = Path(calibration)
        self.error = positive_number("an error threshold", error, meaning="force error in eV/A")
        self.type_elements = list(type_elements)
        unknown = [s for s in self.type_elements if s not in atomic_numbers]
        if not self.type_elements or unknown:
            raise ValueError(f"type_elements must be element symbols, one per atom type, got "
                             f"{self.type_elements!r}")
        self.written: Calibration | None = None  # the calibration `path` holds
        self.values: list[str] = []  # its thresholds, one or one per type
        self._bytes: bytes | None = None

    def update(self) -> Calibration | None:
        """Write `path` from the calibration file if its bytes changed since the last call (and
        at the first); the calibration written, else None. A calibration at another cutoff than
        the one first written is refused (CalibrationRefused, the file kept): the fix would stop
        the run on it. The first call raises on a file that cannot be read."""
        data = self.calibration.read_bytes()
        if data == self._bytes:
            return None
        self._bytes = data
        calibration = Calibration.load(self.calibration)
        if self.written is not None and calibration.cutoff != self.written.cutoff:
            warnings.warn(f"{self.calibration}: calibration {calibration.digest} was fitted for "
                          f"local uncertainties within {calibration.cutoff:g} A, the run's are "
                          f"within {self.written.cutoff:g} A; {self.path} keeps calibration "
                          f"{self.written.digest} until the file changes again",
                          CalibrationRefused, stacklevel=2)
            return None
        values = calibration.lammps_threshold(self.error, self.type_elements).split(",")
        write_atomically(self.path, thresholds_text(calibration, self.error, self.type_elements,
                                                    values))
        self.written, self.values = calibration, values
        return calibration


def describe(thresholds: ThresholdFile) -> str:
    """One line on what the file of `thresholds` holds: its calibration and each type's limit."""
    calibration, elements, values = (thresholds.written, thresholds.type_elements,
                                     thresholds.values)
    if len(values) == 1:  # (one for every type)
        values = values * len(elements)
    limits = ", ".join(f"{value} ({symbol})" for value, symbol in zip(values, elements))
    return (f"{thresholds.path}: calibration {calibration.digest}, {calibration.form} map, "
            f"{thresholds.error:g} eV/A at local uncertainty {limits}")


def follow(thresholds: ThresholdFile, poll: float) -> None:
    """Update `thresholds` every `poll` s until interrupted (Ctrl-C, or SIGTERM in the
    mdmonitor command), printing each write; a calibration that cannot be read is reported on
    stderr and the file kept."""
    try:
        while True:
            time.sleep(poll)
            try:
                calibration = thresholds.update()
            except (OSError, ValueError) as err:
                print(f"{thresholds.path} not updated: {err}", file=sys.stderr, flush=True)
                continue
            if calibration is not None:
                print(describe(thresholds), flush=True)
    except KeyboardInterrupt:
        return
