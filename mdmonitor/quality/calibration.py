"""Calibration: expected force error from the local uncertainty (Heid et al. 2024, Eq. 3).

Error and uncertainty follow seed 002's definitions:

- the force error of atom j is e_j = (1/3) sum_k |F_jk - F_jk^ref|, the mean absolute error of
  its three Cartesian force components in eV/A (Eq. 5 averaged over x, y, z as in Eq. 9); its
  uncertainty u_j is the estimator's ``atomic_uncertainty`` (a committee's s_j, Eq. 8, eV/A;
  scale / sqrt(LPR_j) for the last-layer LPR);
- both are aggregated alike, as the mean over the atom and its neighbours within the cutoff
  (Eqs. 9-10), which is what `MonitoredCalculator` compares with its thresholds;
- alpha = sum_j e_j^local / sum_j u_j^local over every atom of every labelled frame: Eq. 3
  (mean absolute error = alpha x mean uncertainty) with the local values as samples
  (eV/A per unit of uncertainty).

So alpha x local uncertainty is the expected local force error (eV/A) of an atom, and an error
threshold e* is the uncertainty threshold e* / alpha. One factor cannot serve a model whose
error-to-uncertainty ratio differs between elements; beside alpha a calibration holds a monotone
map (`error_maps`: alpha, a factor per element, or a power law a_Z u^b_Z, of one signal or of
several at once with a `Combined` estimator) chosen by held-out likelihood, which gives the
expected error. The calibration keeps the range of expected errors the map gave each element's
fitting atoms: an error threshold outside it fires on every atom or on none of frames like those
(ThresholdRangeWarning), and a map whose range is a point cannot rank (ConstantMapWarning). A
`Calibration` is valid only for the estimator (model files by SHA-256, LLPR
matrix) and the cutoff it was fitted with; `Calibration.check` refuses any other. Format 2 adds
the map; format 1 files (alpha only) are read as the alpha map.
"""

from __future__ import annotations

import hashlib
import json
import math
import warnings
from dataclasses import MISSING, asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.data import atomic_numbers, chemical_symbols
from tqdm.auto import tqdm

from ..aggregation import aggregate, checked_cutoff
from ..common.geometry import check_structure
from ..common.atomic_files import write_atomically
from ..common.settings import positive_integer, positive_number
from ..common.structures import DEFAULT_FORCES_KEYS, load_structures, reference_forces
from ..estimators.combined import Combined
from ..estimators.committee import Committee
from .error_maps import (
    CONSTANT_SPREAD,
    FORMS,
    ErrorMap,
    MapSamples,
    Term,
    choose_map,
    constant_elements,
    expected_error_ranges,
    fit_map,
)

__all__ = ["Calibration", "ConstantMapWarning", "FewFramesWarning", "LabeledPrediction",
           "ThresholdRangeWarning", "estimator_identity", "fit_alpha", "posterior_alpha",
           "predict_labeled", "uncertainty_unit"]

FORMAT = "mdmonitor-calibration"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
# eV/A: labels this close to the predictions everywhere are the model's own forces, round-off and
# the 8 decimals of extxyz included; no reference method agrees with a model that well
SAME_FORCES = 1e-6
# The per-atom array `mdmonitor md` writes beside the forces that drove its dynamics (md.py
# FRAME_ARRAYS): frames that carry it hold the model's forces, not reference labels.
MONITOR_COLUMN = "atomic_uncertainty"
# Below this many labelled frames alpha and the error-uncertainty correlations rest on too few
# samples: the ratio of a frame's mean local error to its mean local uncertainty scatters from
# frame to frame (by 16 % for the bundled committee, 32 % for its LLPR, on cu_valid.extxyz), so
# alpha fitted on n frames scatters by about that / sqrt(n): 7 % for the LLPR at 20, 19 % at 3.
RELIABLE_FRAMES = 20
# The `fix mdmonitor` threshold of an atom type that no local uncertainty reaches (LAMMPS reads
# no "inf"): a constant map's limit for an error above its constant.
NEVER_REACHED = 1e300
# hex digits of `Calibration.digest` (48 bits)
DIGEST_LENGTH = 12
ERROR_DEFINITION = ("local mean over neighbours within the cutoff (atom included) of the mean "
                    "absolute Cartesian force-component error e_j = (1/3) sum_k |F_jk - F_jk^ref|, "
                    "eV/A")


class FewFramesWarning(UserWarning):
    """Calibrated or evaluated on fewer than RELIABLE_FRAMES labelled frames."""


class ConstantMapWarning(UserWarning):
    """The fitted map gives every atom of an element the same expected error."""


class ThresholdRangeWarning(UserWarning):
    """An error threshold outside the expected errors the map gave its fitting atoms."""


@dataclass
class LabeledPrediction:
    """An estimator's prediction of one labelled frame.

    atoms: the frame (positions, cell, pbc used for aggregation); force_error (N, 3): predicted
    minus reference forces, eV/A; atomic_uncertainty (N,): the estimator's u_j; extra: the
    estimator's further results (e.g. "atomic_energy_uncertainty", "atomic_rigidity").
    """

    atoms: Atoms
    force_error: np.ndarray
    atomic_uncertainty: np.ndarray
    extra: dict

    @classmethod
    def of(cls, estimator, atoms: Atoms, reference) -> "LabeledPrediction":
        """`estimator`'s prediction of `atoms`, whose reference forces are `reference` (N, 3)."""
        prediction = estimator.predict(atoms)
        return cls(atoms=atoms, force_error=np.asarray(prediction.forces) - reference,
                   atomic_uncertainty=np.asarray(prediction.atomic_uncertainty, dtype=float),
                   extra=dict(prediction.extra))

    @property
    def atomic_error(self) -> np.ndarray:
        """e_j = (1/3) sum_k |F_jk - F_jk^ref| (eV/A), shape (N,)."""
        return np.abs(self.force_error).mean(axis=1)

    def local(self, values, cutoff: float | None) -> np.ndarray:
        """Per-atom `values` aggregated at `cutoff` (A): 0 leaves them per atom, a positive
        cutoff gives the mean over each atom's neighbours within it (atom included), None the
        mean over the whole frame as a single value (seed 002 Eqs. 7-8)."""
        values = np.asarray(values, dtype=float)
        if cutoff is None:
            return np.array([values.mean()])
        if cutoff == 0:
            return values
        return aggregate(self.atoms, values, cutoff)

    def atomic_signals(self, names: tuple[str, ...]) -> list[np.ndarray]:
        """The per-atom values of the signals `names` (`signal_names` of the estimator)."""
        return atomic_signals(names, self.atomic_uncertainty, self.extra)


def signal_names(estimator) -> tuple[str, ...]:
    """The uncertainty signals an estimator gives: its kind ("committee", "llpr", ...), or
    the names of a `Combined` estimator's members."""
    if isinstance(estimator, Combined):
        return estimator.names
    return (estimator_identity(estimator)["kind"],)


def atomic_signals(names: tuple[str, ...], atomic_uncertainty, extra: dict) -> list[np.ndarray]:
    """Per-atom values of the signals `names` from a prediction's atomic_uncertainty and extra
    (a `Combined` estimator's are in extra["signals"])."""
    if "signals" not in extra:
        return [np.asarray(atomic_uncertainty, dtype=float)]
    missing = [name for name in names if name not in extra["signals"]]
    if missing:
        raise ValueError(f"the prediction has no signal {', '.join(missing)}; it has "
                         f"{', '.join(extra['signals'])}")
    return [np.asarray(extra["signals"][name], dtype=float) for name in names]


def map_samples(predictions: list[LabeledPrediction], names: tuple[str, ...],
                cutoff: float) -> MapSamples:
    """The atoms of `predictions` as fitting data of an error map at `cutoff` (A)."""
    return MapSamples(
        error=np.concatenate([p.local(p.atomic_error, cutoff) for p in predictions]),
        signals=np.concatenate([np.column_stack([p.local(v, cutoff)
                                                 for v in p.atomic_signals(names)])
                                for p in predictions]),
        numbers=np.concatenate([p.atoms.numbers for p in predictions]),
        frame=np.concatenate([np.full(len(p.atoms), i) for i, p in enumerate(predictions)]),
        force_error=np.concatenate([p.force_error for p in predictions]))


def predict_labeled(estimator, structures, forces_key: str | None = None,
                    progress: bool = True) -> list[LabeledPrediction]:
    """Predict every labelled frame of `structures` (file, list of Atoms) with `estimator`.

    Reference forces are found by `reference_forces`, under `forces_key` or, when None, under
    "REF_forces" then "forces". Every frame's labels are checked before the first prediction.
    At least two frames are needed (FewFramesWarning below RELIABLE_FRAMES), an uncertainty that
    varies, and labels that are not a model's forces: neither the forces a monitored MD wrote
    beside its uncertainties (whichever model drove it) nor the estimator's own (every error
    below SAME_FORCES).
    """
    frames = load_structures(structures)
    if len(frames) < 2:
        raise ValueError(f"need at least two labelled frames, got {len(frames)}: one frame is "
                         "a single sample of the error at the structure level")
    keys = DEFAULT_FORCES_KEYS if forces_key is None else (forces_key,)
    references = [reference_forces(atoms, keys, i) for i, atoms in enumerate(frames)]
    for i, (atoms, reference) in enumerate(zip(frames, references)):
        check_structure(atoms, f"frame {i}")
        if _driving_forces(atoms, reference):
            raise ValueError(
                f"frame {i}: its labels are the 'forces' that `mdmonitor md` wrote beside its "
                f"{MONITOR_COLUMN} column, the forces of the model that drove the dynamics (the "
                "committee mean or the single model), not a reference calculation; label the "
                "frames with the reference method (e.g. boxes labeled by `mdmonitor label`)")
    if len(frames) < RELIABLE_FRAMES:
        warnings.warn(f"only {len(frames)} labelled frames: alpha and the correlations between "
                      f"error and uncertainty are unreliable below {RELIABLE_FRAMES} (both vary "
                      "from frame to frame); label more frames", FewFramesWarning, stacklevel=3)
    predictions = [LabeledPrediction.of(estimator, atoms, reference) for atoms, reference in
                   tqdm(list(zip(frames, references)), desc="predicting", unit="frame",
                        disable=not progress)]
    uncertainty = np.concatenate([p.atomic_uncertainty for p in predictions])
    if np.ptp(uncertainty) == 0:
        raise ValueError(
            f"the uncertainty is {uncertainty[0]:g} for every atom of every frame: it says "
            "nothing about where the errors are, so it cannot be calibrated or evaluated (a "
            "committee of identical members?)")
    if all(np.abs(p.force_error).max() < SAME_FORCES for p in predictions):
        raise ValueError("the predicted forces equal the reference forces in every frame: the "
                         "labels are the model's own forces (e.g. frames written by "
                         "`mdmonitor md`), not a reference calculation")
    return predictions


def _driving_forces(atoms: Atoms, reference: np.ndarray) -> bool:
    """True if `reference` are the "forces" stored with a frame that carries MONITOR_COLUMN: a
    frame of a monitored MD, whose forces are those of the model that drove it."""
    if MONITOR_COLUMN not in atoms.arrays:
        return False
    try:
        stored = reference_forces(atoms, ("forces",))
    except ValueError:
        return False
    return np.array_equal(stored, reference)


def fit_alpha(local_error, local_uncertainty) -> float:
    """alpha = sum(local_error) / sum(local_uncertainty): seed 002 Eq. 3, mean error = alpha x
    mean uncertainty, over samples (one per atom, or per frame) of errors (eV/A) and
    uncertainties. ValueError unless both sums are positive (alpha would be 0 or undefined)."""
    error = np.asarray(local_error, dtype=float)
    uncertainty = np.asarray(local_uncertainty, dtype=float)
    if error.shape != uncertainty.shape or error.ndim != 1 or len(error) == 0:
        raise ValueError(f"local_error {error.shape} and local_uncertainty {uncertainty.shape} "
                         "must be 1-D arrays of the same, nonzero length")
    if not (error.sum() > 0 and uncertainty.sum() > 0):
        raise ValueError(f"alpha = sum of errors / sum of uncertainties needs both positive, got "
                         f"{error.sum():g} / {uncertainty.sum():g}")
    return float(error.sum() / uncertainty.sum())


def posterior_alpha(estimator, validation, forces_key: str | None = None,
                    progress: bool = True) -> float:
    """alpha (eV) of a force LLPR's posterior (`LastLayerLPR` with target "forces"), fitted on
    labelled frames (file or list of Atoms) like the committee's calibration (seed 002 Eq. 3):
    sum_j e_j / sum_j s_j over all atoms, e_j the mean absolute force error over x, y, z and
    s_j the spread at alpha = 1. Sets the estimator's scale to 1 first."""
    estimator.scale = 1.0
    predictions = predict_labeled(estimator, validation, forces_key, progress)
    return fit_alpha(np.concatenate([p.atomic_error for p in predictions]),
                     np.concatenate([p.atomic_uncertainty for p in predictions]))


def estimator_identity(estimator) -> dict:
    """What a calibration is valid for: the estimator kind, its MACE model files (name, SHA-256,
    head) and, for a single-model estimator (LLPR, LTAU, GMM), the SHA-256 of its fitted state.
    A committee of plain ASE calculators is identified by its member names only."""
    if isinstance(estimator, Combined):
        return {"kind": "combined", "signals": {name: estimator_identity(e) for name, e
                                                in estimator.estimators.items()}}
    if isinstance(estimator, Committee):
        if estimator.models is None:
            identity = {"kind": "committee", "members": list(estimator.names)}
        else:
            identity = {"kind": "committee",
                        "models": [_model_identity(m) for m in estimator.models]}
        # the errors are the driving model's: a calibration of the mean's is another one
        if isinstance(estimator.driver, int):
            identity["driver"] = estimator.driver
        elif estimator.driver is not None:
            identity["driver"] = _model_identity(estimator.driver)
        return identity
    if hasattr(estimator, "state_sha256"):
        return {"kind": estimator.kind, "models": [_model_identity(estimator.model)],
                "state_sha256": estimator.state_sha256()}
    return {"kind": type(estimator).__name__}


def _exponents(error_map: ErrorMap) -> str:
    """The exponents of a map's terms, e.g. "3.4e-20 (all elements), 0.2 (Au)"."""
    terms = [("all elements", error_map.pooled),
             *((chemical_symbols[z], term) for z, term in error_map.elements.items())]
    return ", ".join(f"{'/'.join(f'{b:.2g}' for b in term.exponents)} ({label})"
                     for label, term in terms)


def _model_identity(model) -> dict:
    return {"file": model.name, "sha256": model.sha256(), "head": model.head}


def _without_file_names(identity: dict) -> dict:
    """`identity` minus the model file names: a renamed or moved model file is the same model."""
    if identity.get("kind") == "combined":
        return {"kind": "combined", "signals": {name: _without_file_names(member) for name, member
                                                in identity["signals"].items()}}

    def without_file(model):
        return {k: v for k, v in model.items() if k != "file"}

    return {key: ([without_file(m) for m in value] if key == "models" else
                  without_file(value) if key == "driver" and isinstance(value, dict) else value)
            for key, value in identity.items()}


ESTIMATOR_NAMES = {"committee": "committee of", "llpr": "last-layer LPR of",
                   "ltau": "LTAU of", "gmm": "latent Gaussian mixture of",
                   "combined": "combination of"}
FITTED_STATES = {"llpr": "Gauss-Newton matrix", "ltau": "training-error index",
                 "gmm": "mixture"}


def describe_estimator(identity: dict) -> str:
    """One line naming an estimator identity, e.g. "committee of a.model (1f2e3d4c), ...",
    SHA-256 prefixes in brackets."""
    if identity["kind"] == "combined":
        return "combination of " + "; ".join(f"{name}: {describe_estimator(member)}" for
                                             name, member in identity["signals"].items())
    members = [f"{m['file']} ({m['sha256'][:8]})" for m in identity.get("models", [])]
    members = members or identity.get("members", [])
    driver = identity.get("driver")
    if driver is not None:
        members[-1] += (f", driven by member {driver}" if isinstance(driver, int) else
                        f", driven by {driver['file']} ({driver['sha256'][:8]})")
    kind = ESTIMATOR_NAMES.get(identity["kind"], identity["kind"])
    state = (f" with {FITTED_STATES.get(identity['kind'], 'fitted state')} "
             f"{identity['state_sha256'][:8]}" if "state_sha256" in identity else "")
    return f"{kind} {', '.join(members)}{state}".strip()


def uncertainty_unit(estimator) -> str:
    """Unit of the estimator's atomic_uncertainty, for labels and reports."""
    if isinstance(estimator, Combined):
        return uncertainty_unit(next(iter(estimator.estimators.values())))
    if isinstance(estimator, Committee):
        return "eV/A"
    return getattr(estimator, "unit", "estimator unit")


@dataclass(frozen=True)
class Calibration:
    """What turns local uncertainties at `cutoff` (A) into expected local force errors (eV/A),
    for the estimator described by `estimator` (`estimator_identity`).

    alpha (eV/A per unit of uncertainty) = `mean_error` / `mean_uncertainty`, the mean local
    error (eV/A) and mean local uncertainty of the `n_atoms` atoms of the `n_frames` frames it
    was fitted on, at `fitted` (ISO 8601, UTC), from `source` (file name, if any). `error_map`
    (`ErrorMap.to_dict`) gives the expected error; None (a format 1 file) means alpha x u.
    `held_out_nll` holds the held-out likelihood of every form tried when the form was chosen.
    `expected_error_range` is, per element symbol, the smallest and largest expected error
    (eV/A) the map gave the fitting atoms, and `constant` lists the elements for which those
    lie within CONSTANT_SPREAD of each other (None in files written before them). Build with
    `Calibration.fit`; store with `save`/`load` (JSON). A field that `fit` could not
    have written is refused (ValueError naming it). `digest` names the calibration in a few
    characters (DIGEST_LENGTH hex digits of the SHA-256 of its fields): the monitor logs it.
    """

    alpha: float
    cutoff: float
    estimator: dict
    n_frames: int
    n_atoms: int
    mean_error: float
    mean_uncertainty: float
    fitted: str
    source: str | None = None
    error_map: dict | None = None
    held_out_nll: dict | None = None
    expected_error_range: dict | None = None
    constant: list | None = None

    def __post_init__(self) -> None:
        for name in ("alpha", "mean_error", "mean_uncertainty"):
            positive_number(name, getattr(self, name))
        checked_cutoff(self.cutoff, meaning="distance in A (the monitor's aggregation radius)")
        positive_integer("n_frames", self.n_frames)
        positive_integer("n_atoms", self.n_atoms)
        ratio = self.mean_error / self.mean_uncertainty
        if not math.isclose(self.alpha, ratio, rel_tol=1e-9):
            raise ValueError(f"alpha {self.alpha!r} is not mean_error / mean_uncertainty = "
                             f"{self.mean_error!r} / {self.mean_uncertainty!r} = {ratio!r}, "
                             "as a fit makes it")
        if not (isinstance(self.estimator, dict) and isinstance(self.estimator.get("kind"), str)):
            raise ValueError(f"estimator must be an estimator identity with a 'kind', got "
                             f"{self.estimator!r}")
        for name in ("fitted", "source"):
            value = getattr(self, name)
            if not isinstance(value, str) and not (name == "source" and value is None):
                raise ValueError(f"{name} must be a string, got {value!r}")
        if self.error_map is None:  # a format 1 file: alpha alone
            parsed = ErrorMap("alpha", (self.estimator["kind"],), (0.0,),
                              Term(self.alpha, (1.0,)), {})
        else:
            try:
                parsed = ErrorMap.from_dict(self.error_map)
            except ValueError as err:
                raise ValueError(f"error_map: {err}") from None
            if parsed.form == "alpha" and not math.isclose(parsed.pooled.prefactor, self.alpha,
                                                           rel_tol=1e-9):
                raise ValueError(f"error_map: the alpha form's factor "
                                 f"{parsed.pooled.prefactor!r} is not alpha {self.alpha!r}")
        object.__setattr__(self, "map", parsed)
        fields = json.dumps(asdict(self), sort_keys=True).encode()
        object.__setattr__(self, "digest", hashlib.sha256(fields).hexdigest()[:DIGEST_LENGTH])
        for symbol, bounds in (self.expected_error_range or {}).items():
            if not (symbol in atomic_numbers and isinstance(bounds, (list, tuple))
                    and len(bounds) == 2 and all(isinstance(v, (int, float)) for v in bounds)
                    and 0 <= bounds[0] <= bounds[1] < math.inf):
                raise ValueError(f"expected_error_range must map element symbols to [smallest, "
                                 f"largest] errors in eV/A, got {symbol!r}: {bounds!r}")
        if self.constant is not None and not all(s in atomic_numbers for s in self.constant):
            raise ValueError(f"constant must list element symbols, got {self.constant!r}")

    @classmethod
    def fit(cls, estimator, structures, cutoff: float, forces_key: str | None = None,
            progress: bool = True, form: str = "auto") -> "Calibration":
        """Fit alpha and the error map of `form` ("auto": chosen by held-out likelihood, see
        `error_maps`) for `estimator` at `cutoff` (A, > 0) on labelled `structures` (a file
        or a list of Atoms; labels as in `reference_forces`). ConstantMapWarning when the map
        gives every atom of an element the same expected error."""
        cutoff = checked_cutoff(cutoff, meaning="distance in A (the monitor's aggregation radius)")
        if form != "auto" and form not in FORMS:
            raise ValueError(f"form must be 'auto' or one of {', '.join(FORMS)}, got {form!r}")
        predictions = predict_labeled(estimator, structures, forces_key, progress)
        calibration = cls.from_predictions(estimator, predictions, cutoff, form,
                                           str(structures) if isinstance(structures, (str, Path))
                                           else None)
        if calibration.constant:
            low = calibration.expected_error_range[calibration.constant[0]][0]
            warnings.warn(
                f"this signal does not rank the errors; the map is constant: the "
                f"{calibration.form} map gives every {', '.join(calibration.constant)} atom the "
                f"same expected error ({low:.4g} eV/A within {CONSTANT_SPREAD:.0%}; "
                f"exponents {_exponents(calibration.map)}), so an error threshold fires on every "
                "such atom or on none. Monitor with another signal (`mdmonitor evaluate` "
                "compares them)",
                ConstantMapWarning, stacklevel=2)
        return calibration

    @classmethod
    def from_predictions(cls, estimator, predictions: list[LabeledPrediction], cutoff: float,
                         form: str = "auto", source: str | None = None) -> "Calibration":
        """`fit` on predictions already made (`predict_labeled`); "auto" on a single frame
        is the alpha form."""
        names = signal_names(estimator)
        samples = map_samples(predictions, names, cutoff)
        # the first signal is the atomic_uncertainty (a Combined estimator's first member's)
        error, uncertainty = samples.error, samples.signals[:, 0]
        if form == "auto" and len(predictions) < 2:
            form = "alpha"  # no frame to hold out: nothing to choose by
        if form == "auto":
            error_map, scores = choose_map(samples, names)
        else:
            error_map, scores = fit_map(form, samples, names), None
        ranges = expected_error_ranges(error_map, samples)
        return cls(alpha=fit_alpha(error, uncertainty), cutoff=cutoff,
                   estimator=estimator_identity(estimator), n_frames=len(predictions),
                   n_atoms=len(error), mean_error=float(error.mean()),
                   mean_uncertainty=float(uncertainty.mean()),
                   fitted=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                   source=source, error_map=error_map.to_dict(), held_out_nll=scores,
                   expected_error_range={chemical_symbols[z]: list(bounds)
                                         for z, bounds in ranges.items()},
                   constant=[chemical_symbols[z] for z in constant_elements(error_map, samples)])

    @property
    def form(self) -> str:
        return self.map.form

    def expected_error(self, local_signals, numbers=None) -> np.ndarray:
        """Expected local force error (eV/A) from the local values of the map's signals,
        (N,) for one signal or (N, K), and the atoms' atomic `numbers` (N,), which only the
        alpha form does without."""
        values = np.asarray(local_signals, dtype=float)
        if self.form == "alpha" and values.ndim == 1:
            return self.map.pooled.prefactor * values
        if numbers is None:
            raise ValueError(f"the {self.form} map needs the atomic numbers of the atoms")
        return self.map.expected_error(values, numbers)

    def local_signals(self, atoms: Atoms, atomic_uncertainty, extra: dict,
                      local_uncertainty) -> np.ndarray:
        """(N, K) local values at this cutoff of the map's signals for one frame, given its
        prediction's atomic_uncertainty and extra and the already aggregated
        local_uncertainty."""
        if len(self.map.signals) == 1 and "signals" not in extra:
            return np.asarray(local_uncertainty, dtype=float)[:, None]
        return np.column_stack([aggregate(atoms, values, self.cutoff) for values in
                                atomic_signals(self.map.signals, atomic_uncertainty, extra)])

    def threshold_for(self, error: float) -> float:
        """The local-uncertainty threshold at which the expected local force error is `error`
        (eV/A), i.e. error / alpha; only for the alpha form (others depend on the element and
        the signals: compare `expected_error` with the error itself)."""
        error = positive_number("an error threshold", error, meaning="force error in eV/A")
        if self.form != "alpha":
            raise ValueError(f"a calibration of form {self.form} has no single uncertainty "
                             "threshold; give thresholds as expected errors (error_threshold) "
                             "or fit one with form 'alpha' (`mdmonitor calibrate --form alpha`)")
        self.check_error_threshold(error)
        return error / self.alpha

    def lammps_threshold(self, error: float, type_elements) -> str:
        """The `threshold` argument of `fix mdmonitor` at which the expected local force error
        is `error` (eV/A), for atom types of the elements `type_elements` (symbols, type 1
        first): error / alpha for the alpha form, else one local-uncertainty limit per type,
        comma-separated (a one-signal map; several signals exist in ASE only). A type no local
        uncertainty can make reach `error` (a constant map) gets NEVER_REACHED; a
        ThresholdRangeWarning as `check_error_threshold`."""
        error = self.check_error_threshold(error, type_elements)
        limits = self.uncertainty_limits(error, type_elements)
        if self.form == "alpha":
            return f"{error / self.alpha:.10g}"
        return ",".join(f"{min(limits[symbol], NEVER_REACHED):.10g}" for symbol in type_elements)

    def uncertainty_limits(self, error: float, elements) -> dict[str, float]:
        """Per element symbol of `elements`, the local uncertainty at which the expected local
        force error reaches `error` (eV/A): error / alpha for the alpha form, else the map's
        (one signal only; inf where no uncertainty reaches it)."""
        error = positive_number("an error threshold", error, meaning="force error in eV/A")
        if self.form == "alpha":
            return {symbol: error / self.alpha for symbol in elements}
        limits = self.map.uncertainty_limits(error, [atomic_numbers[s] for s in elements])
        return {symbol: limits[atomic_numbers[symbol]] for symbol in elements}

    def check_error_threshold(self, error: float, elements=None) -> float:
        """`error` (eV/A, > 0), with a ThresholdRangeWarning for each of `elements` (symbols;
        None: every element calibrated) whose calibration atoms' expected errors all lie above
        it (it fires on every such atom) or all below it (it fired on none: the map is
        extrapolated there)."""
        error = positive_number("an error threshold", error, meaning="force error in eV/A")
        ranges = self.expected_error_range or {}
        for symbol in dict.fromkeys(ranges if elements is None else elements):
            if symbol not in ranges:
                continue
            low, high = ranges[symbol]
            span = f"{low:.4g}" if f"{low:.4g}" == f"{high:.4g}" else f"{low:.4g}-{high:.4g}"
            seen = (f"the {span} eV/A the {self.form} map gave the {symbol} atoms of the "
                    f"{self.n_frames} calibration frames")
            if error < low:
                warnings.warn(f"an error threshold of {error:g} eV/A is below {seen}: it fires "
                              f"on every {symbol} atom of frames like those", ThresholdRangeWarning,
                              stacklevel=3)
            elif error > high:
                warnings.warn(f"an error threshold of {error:g} eV/A is above {seen}: none of "
                              f"them reached it, and the map is extrapolated there",
                              ThresholdRangeWarning, stacklevel=3)
        return error

    def check(self, estimator, cutoff: float) -> None:
        """ValueError unless this calibration was fitted for `estimator` at `cutoff` (A)."""
        if _without_file_names(estimator_identity(estimator)) != _without_file_names(
                self.estimator):
            raise ValueError(
                f"the calibration was fitted for the {describe_estimator(self.estimator)}, not "
                f"for the {describe_estimator(estimator_identity(estimator))}; fit one for this "
                "estimator with `mdmonitor calibrate`")
        if not math.isclose(cutoff, self.cutoff, rel_tol=1e-9):
            raise ValueError(
                f"the calibration was fitted for local uncertainties within {self.cutoff:g} A, "
                f"but the cutoff here is {cutoff:g} A; alpha depends on the cutoff: use "
                f"cutoff={self.cutoff:g} or fit again with `mdmonitor calibrate --cutoff "
                f"{cutoff:g}`")

    def save(self, path: str | Path) -> None:
        """Write the calibration as JSON (atomically: a temporary file, then renamed)."""
        path = Path(path)
        document = {"format": FORMAT, "format_version": FORMAT_VERSION, **asdict(self),
                    "error": ERROR_DEFINITION}
        write_atomically(path, json.dumps(document, indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "Calibration":
        """Read a file written by `save`."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"calibration file '{path}' does not exist")
        try:
            document = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ValueError(f"cannot read calibration file '{path}': {err}") from err
        if not isinstance(document, dict) or document.get("format") != FORMAT:
            raise ValueError(f"'{path}' is not an mdmonitor calibration file; make one with "
                             "`mdmonitor calibrate`")
        version = document.get("format_version")
        if type(version) is not int or version not in READABLE_VERSIONS:
            kind = "" if type(version) is int else f" (a {type(version).__name__})"
            raise ValueError(f"'{path}' has calibration format version {version!r}{kind}, this "
                             f"mdmonitor reads format versions "
                             f"{', '.join(map(str, READABLE_VERSIONS))} (an integer); "
                             "fit it again with `mdmonitor calibrate`")
        fields = cls.__dataclass_fields__
        missing = [name for name, field in fields.items()
                   if name not in document and field.default is MISSING]
        if missing:
            raise ValueError(f"calibration file '{path}' lacks {', '.join(missing)}")
        try:
            return cls(**{name: document[name] for name in fields if name in document})
        except ValueError as err:
            raise ValueError(f"calibration file '{path}': {err}; fit it again with "
                             "`mdmonitor calibrate`") from None
