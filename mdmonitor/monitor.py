"""MonitoredCalculator: a drop-in ASE calculator that watches the uncertainty while it computes.

Forces driving the dynamics come from the estimator (committee mean, its driving model, or the
single model); every `interval` calls the per-atom uncertainty is aggregated over neighbours
within `cutoff` (Heid et al. 2024, Eq. 10), logged, and compared with the thresholds. On the
other calls an estimator that can skip its uncertainty (`predict(atoms, uncertainty=False)`, e.g.
a committee with a driver) is asked for the forces only.
"""

from __future__ import annotations

import inspect
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from ase import Atoms, units
from ase.calculators.calculator import Calculator, all_changes

from .aggregation import aggregate, checked_cutoff
from .common.geometry import check_structure
from .common.settings import finite_array, positive_integer, positive_number
from .monitor_log import MonitorLog
from .quality.calibration import Calibration
from .stability import Finding, Instability, StabilityCriteria, non_finite


@dataclass
class Trigger:
    """A monitored frame on which some atoms' local uncertainty exceeded `threshold`.

    `atoms` is a copy of the frame; `indices` the atoms above the threshold, most uncertain
    first; uncertainties are (N,) arrays in the estimator's unit.
    """

    step: int
    time_fs: float | None
    atoms: Atoms
    atomic_uncertainty: np.ndarray
    local_uncertainty: np.ndarray
    indices: np.ndarray


class UncertaintyLimitExceeded(RuntimeError):
    """Raised from a force call when a local uncertainty (or, with a calibration of a form
    other than alpha, an expected local error) exceeds the stop threshold.

    Carries `step`, `atom` (index), `value` and `limit`; the log line of that frame is written
    before it is raised, so the run ends cleanly.
    """

    def __init__(self, step: int, atom: int, value: float, limit: float,
                 quantity: str = "local uncertainty", limit_name: str = "stop_threshold"):
        self.step, self.atom, self.value, self.limit = step, atom, value, limit
        super().__init__(f"{quantity} {value:.4g} at atom {atom} exceeds {limit_name} "
                         f"{limit:.4g} at step {step}: the model has left its trusted domain")


class CalibrationRefused(UserWarning):
    """The calibration file changed on disk, but its new content cannot serve this monitor:
    the monitor goes on with the calibration it had."""


def _file_state(path: Path) -> bytes | None:
    """The content of `path` (None: missing or unreadable), to see whether it changed: a
    calibration file is a few kB, read in tens of microseconds, and unlike its mtime (as coarse
    as the kernel's clock tick) and inode (reused), its bytes always tell."""
    try:
        return path.read_bytes()
    except OSError:
        return None


def _calibrated_limit(name: str, limit, error_limit, calibration):
    """The limit `name` on the monitored quantity, given directly or as error_`name`, an
    expected local force error (eV/A): the local uncertainty error / alpha for an alpha-form
    calibration; the expected error itself for other forms, which watch it. A
    ThresholdRangeWarning when the error lies outside the expected errors seen in calibration."""
    if error_limit is None:
        if limit is not None and calibration is not None and calibration.form != "alpha":
            raise ValueError(f"with a calibration of form {calibration.form} the monitor "
                             f"compares expected errors: give error_{name} (eV/A), not {name}")
        return limit
    if limit is not None:
        raise ValueError(f"give {name} (a local uncertainty) or error_{name} (an expected force "
                         "error in eV/A), not both")
    if calibration is None:
        raise ValueError(f"error_{name} needs a calibration: calibration='alpha.json' from "
                         "`mdmonitor calibrate`")
    error_limit = positive_number(f"error_{name}", error_limit, meaning="force error in eV/A")
    if calibration.form != "alpha":
        return calibration.check_error_threshold(error_limit)
    return calibration.threshold_for(error_limit)


def _check_input(atoms: Atoms, step: int) -> None:
    """ValueError before any model call unless positions, cell and momenta (if any) of `atoms`
    are finite and the periodic cell is not degenerate; a NaN would hang the model's neighbour
    search, and once in the dynamics it reaches every later frame."""
    what = f"the atoms at force call {step}"
    check_structure(atoms, what)
    if "momenta" in atoms.arrays:
        finite_array(f"{what}: momenta (velocities)", atoms.arrays["momenta"])


class MonitoredCalculator(Calculator):
    """ASE calculator wrapping an uncertainty estimator (`Committee`, `LastLayerLPR`, ...).

    Results: energy, free_energy (eV), forces (eV/A), stress (eV/A^3, periodic cells), and
    atomic_uncertainty (N,) (estimator unit: eV/A for a committee), local_uncertainty (N,)
    (its mean over neighbours within `cutoff` A, including the atom; on monitored calls), plus
    the estimator's extras (e.g. energies, atomic_rigidity). An estimator whose `predict` takes
    `uncertainty` (a committee with a driver) skips it on the calls that are not monitored:
    atomic_uncertainty is then absent from the results, never a stale value.

    cutoff: aggregation radius (A). threshold: local uncertainty above which the callbacks get a
    `Trigger`. stop_threshold: above it the force call raises `UncertaintyLimitExceeded`.
    interval: monitor every `interval`-th force call (step 0 is always monitored). log: CSV file
    appended to. timestep: MD time step in ASE units, to log time in fs (step = force-call count,
    which is the MD step for ASE's integrators and the iteration for its optimizers).
    extractor: an `Extractor` that cuts boxes around the triggering atoms (called like the
    callbacks; it relaxes buffers with this estimator's model).
    calibration: a `Calibration` or its JSON file from `mdmonitor calibrate`, fitted for this
    estimator and cutoff; it allows error_threshold and error_stop_threshold, the same limits
    given as expected local force errors (eV/A), and adds the result expected_error (N,) (eV/A).
    An alpha-form calibration turns them into local-uncertainty limits (error / alpha); with any
    other form (per element, power law, several signals) the monitor compares the expected
    error itself with them (triggers, n_above_threshold in the log, the stop), and takes
    limits only as errors. A calibration given as a file is followed: when the file changes
    on disk (e.g. refitted by `mdmonitor label --calibrate` as boxes are labeled), the next
    monitored step reads it, checks it against this estimator and cutoff and the limits given,
    and monitors with it from that step on; a new content that cannot serve (unreadable,
    fitted for another estimator or cutoff, a form the limits do not fit) is refused with a
    `CalibrationRefused` warning and the old calibration kept. The log's `calibration` column
    names the calibration of each monitored step by its `digest`.

    stability: the `StabilityCriteria` checked on every monitored frame (True: the defaults,
    close contacts below 0.5 x the sum of covalent radii and a temperature above 10 x the
    starting one; False: none). A frame that violates one is logged with the codes in the
    `instability` column (also results["instability"], "" when stable) and handed as an
    `Instability` to `on_instability(instability)`; with stop_on_instability the force call
    then raises it.

    The first force call refuses (ValueError) atoms with NaN or inf positions, cell or momenta,
    or a degenerate periodic cell, before the model sees them (bad input); from the second on,
    NaN or inf positions, momenta, energy or forces are an instability (with stability) that is
    logged, handed to on_instability and always raised, since the run cannot go on. The first
    call also cuts a trial box with the extractor, so that a box it could never cut stops the
    run at once.
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress"]

    def __init__(self, estimator, cutoff: float, threshold: float | None = None,
                 stop_threshold: float | None = None, interval: int = 1, log=None,
                 timestep: float | None = None, callbacks: list[Callable] = (), extractor=None,
                 calibration=None, error_threshold: float | None = None,
                 error_stop_threshold: float | None = None,
                 stability: StabilityCriteria | bool = True,
                 on_instability: Callable[[Instability], None] | None = None,
                 stop_on_instability: bool = False, **kwargs):
        super().__init__(**kwargs)
        if not hasattr(estimator, "predict"):
            raise TypeError(f"estimator must have a predict(atoms) method, got "
                            f"{type(estimator).__name__}")
        self.estimator = estimator
        self.skips_uncertainty = "uncertainty" in inspect.signature(estimator.predict).parameters
        self.cutoff = checked_cutoff(cutoff, meaning="number")
        self.calibration_file = None
        if calibration is not None and not isinstance(calibration, Calibration):
            self.calibration_file = Path(calibration)
            self._calibration_state = _file_state(self.calibration_file)  # (before reading)
            calibration = Calibration.load(calibration)
        self.limits = {"threshold": threshold, "stop_threshold": stop_threshold,
                       "error_threshold": error_threshold,
                       "error_stop_threshold": error_stop_threshold}
        self.calibration = None
        self._use(calibration)
        self.timestep = positive_number("timestep", timestep, allow_none=True)
        self.interval = positive_integer("interval", interval)
        self.log = MonitorLog(log) if log is not None else None
        self.callbacks = list(callbacks)
        self.extractor = extractor
        if extractor is not None:
            if self.threshold is None:
                raise ValueError("an extractor needs a threshold: boxes are cut around the atoms "
                                 "whose local uncertainty exceeds it")
            extractor.use_estimator(estimator)
            self.callbacks.append(extractor)
        if stability is True:
            stability = StabilityCriteria()
        if not (stability is False or stability is None or isinstance(stability,
                                                                      StabilityCriteria)):
            raise TypeError(f"stability must be a StabilityCriteria, True or False, got "
                            f"{type(stability).__name__}")
        self.stability = stability or None
        if on_instability is not None and not callable(on_instability):
            raise TypeError(f"on_instability must be a function of the Instability, got "
                            f"{type(on_instability).__name__}")
        self.on_instability = on_instability
        self.stop_on_instability = bool(stop_on_instability)
        self.step = 0

    def _use(self, calibration: Calibration | None) -> None:
        """Monitor with `calibration` (None: without), checked against the estimator, the
        cutoff and the limits asked for; on a ValueError the monitor is left as it was."""
        if calibration is not None:
            calibration.check(self.estimator, self.cutoff)
        limits = self.limits
        threshold = positive_number("threshold", _calibrated_limit(
            "threshold", limits["threshold"], limits["error_threshold"], calibration),
            allow_none=True)
        stop_threshold = positive_number("stop_threshold", _calibrated_limit(
            "stop_threshold", limits["stop_threshold"], limits["error_stop_threshold"],
            calibration), allow_none=True)
        self.calibration = calibration
        # the monitor compares expected errors, not local uncertainties, with its limits
        self.watches_error = calibration is not None and calibration.form != "alpha"
        self.threshold, self.stop_threshold = threshold, stop_threshold

    def _follow_calibration(self) -> None:
        """Read the calibration file again if it changed on disk since it was last read, and
        monitor with it; CalibrationRefused, and the old one kept, if it cannot serve."""
        if self.calibration_file is None:
            return
        state = _file_state(self.calibration_file)
        if state == self._calibration_state:
            return
        self._calibration_state = state  # (a refused content is not read again)
        try:
            calibration = Calibration.load(self.calibration_file)
            if calibration.digest != self.calibration.digest:
                self._use(calibration)
        except (OSError, ValueError) as err:
            warnings.warn(f"calibration file '{self.calibration_file}' changed, but the monitor "
                          f"cannot use it: {err}; it keeps calibration "
                          f"{self.calibration.digest} (alpha {self.calibration.alpha:.4g}) until "
                          "the file changes again", CalibrationRefused, stacklevel=2)

    def add_callback(self, callback: Callable[[Trigger], None]) -> None:
        """Call `callback(trigger)` on every monitored frame that crosses `threshold`."""
        self.callbacks.append(callback)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        step = self.step
        if step > 0 and self.stability is not None:
            self._refuse_non_finite(step, ("positions", self.atoms.positions),
                                    ("momenta", self.atoms.arrays.get("momenta", 0.0)))
        _check_input(self.atoms, step)
        if step == 0 and self.extractor is not None:
            self.extractor.check_frame(self.atoms)
        monitored = step % self.interval == 0
        try:
            if monitored or not self.skips_uncertainty:
                prediction = self.estimator.predict(self.atoms)
            else:
                prediction = self.estimator.predict(self.atoms, uncertainty=False)
        except FloatingPointError as err:  # NaN or inf energy, forces or stress
            if step == 0 or self.stability is None:
                raise
            self._unstable(step, [Finding("non-finite", str(err), np.array([], int))])
        self.results = {"energy": prediction.energy, "free_energy": prediction.energy,
                        "forces": prediction.forces, **prediction.extra}
        if prediction.atomic_uncertainty is not None:
            self.results["atomic_uncertainty"] = prediction.atomic_uncertainty
        if prediction.stress is not None:
            self.results["stress"] = prediction.stress
        self.step = step + 1
        if monitored:
            self._monitor(step, prediction.atomic_uncertainty, prediction.extra)

    def _refuse_non_finite(self, step: int, *named) -> None:
        """Log and raise an Instability if any of the (name, values) pairs is not finite."""
        findings = [f for f in (non_finite(name, value) for name, value in named) if f]
        if findings:
            self._unstable(step, findings)

    def _unstable(self, step: int, findings: list[Finding]) -> None:
        """Log a frame the model cannot go on from (NaN or inf), tell on_instability, raise."""
        self.step = step + 1
        instability = Instability(step, findings, None, self._time_fs(step))
        self.atoms = None  # no results for this frame: a retry computes it anew
        self.results = {"instability": "+".join(instability.codes)}
        if self.log is not None:
            self.log.append(step=step, time_fs=instability.time_fs, max_local_uncertainty=None,
                            max_local_atom=None, mean_local_uncertainty=None,
                            max_atomic_uncertainty=None, n_above_threshold=None,
                            instability=self.results["instability"],
                            calibration=self._calibration_digest())
        if self.on_instability is not None:
            self.on_instability(instability)
        raise instability

    def _calibration_digest(self) -> str | None:
        return None if self.calibration is None else self.calibration.digest

    def _time_fs(self, step: int) -> float | None:
        return None if self.timestep is None else step * self.timestep / units.fs

    def _monitor(self, step: int, atomic: np.ndarray, extra: dict) -> None:
        self._follow_calibration()
        local = aggregate(self.atoms, atomic, self.cutoff)
        self.results["local_uncertainty"] = local
        watched = local
        if self.calibration is not None:
            signals = self.calibration.local_signals(self.atoms, atomic, extra, local)
            expected = self.calibration.expected_error(signals, self.atoms.numbers)
            self.results["expected_error"] = expected
            if self.watches_error:
                watched = expected
        time_fs = self._time_fs(step)
        worst = int(np.argmax(local))
        above = np.flatnonzero(watched > self.threshold) if self.threshold else np.array([], int)
        instability = None
        if self.stability is not None:
            findings = self.stability.check(self.atoms)
            if findings:
                instability = Instability(step, findings, self.atoms.copy(), time_fs)
        self.results["instability"] = "+".join(instability.codes) if instability else ""
        if self.log is not None:
            self.log.append(step=step, time_fs=time_fs, max_local_uncertainty=float(local[worst]),
                            max_local_atom=worst, mean_local_uncertainty=float(local.mean()),
                            max_atomic_uncertainty=float(atomic.max()),
                            n_above_threshold=len(above) if self.threshold else None,
                            instability=self.results["instability"],
                            calibration=self._calibration_digest())
        if len(above):
            trigger = Trigger(step, time_fs, self.atoms.copy(), atomic, local,
                              above[np.argsort(-watched[above], kind="stable")])
            for callback in self.callbacks:
                callback(trigger)
        if instability is not None:
            if self.on_instability is not None:
                self.on_instability(instability)
            if self.stop_on_instability:
                raise instability
        peak = int(np.argmax(watched))
        if self.stop_threshold is not None and watched[peak] > self.stop_threshold:
            raise UncertaintyLimitExceeded(
                step, peak, float(watched[peak]), self.stop_threshold,
                *(("expected local force error (eV/A)", "error_stop_threshold")
                  if self.watches_error else ()))
