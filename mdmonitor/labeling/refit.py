"""A calibration that follows the labels: refitted on a queue's labeled boxes as they come in.

`mdmonitor label --calibrate FILE` refits FILE after each batch of labeled boxes, on all of them
or on the most recent `window`, and writes it atomically; a monitor that was given the file
(`MonitoredCalculator(calibration=FILE)`, `mdmonitor md --calibration FILE`) reads it again at
its next monitored step, and so does a LAMMPS run through its threshold file (`mdmonitor lammps
--calibration FILE`, mdmonitor.lammps.thresholds). So the map follows the run: a slab that the
model handles worse than the bulk it was calibrated on shifts alpha as soon as its boxes are
labeled.
"""

from __future__ import annotations

from pathlib import Path

from ..aggregation import checked_cutoff
from ..common.settings import positive_integer
from ..common.structures import load_structures, reference_forces
from ..estimators.committee import Committee
from ..estimators.mace_model import MaceModel
from ..quality.calibration import Calibration, LabeledPrediction
from ..quality.error_maps import FORMS

LABELS = "REF_forces"  # the reference forces `mdmonitor label` writes


def recorded_committee(box) -> Committee:
    """The committee of the MACE model files a labeled box records it was cut with, each file
    checked against its recorded SHA-256 before it is loaded."""
    files = [f for f in str(box.info.get("model_files", "")).split(";") if f]
    hashes = str(box.info.get("model_sha256", "")).split(";")
    name = box.info.get("box", "the first labeled box")
    if len(files) < 2 or len(hashes) != len(files):
        raise ValueError(f"box '{name}' records {len(files)} model file(s), not the two or more "
                         "of a committee: give the estimator the monitor runs (e.g. --llpr "
                         "FILE) to refit its calibration")
    return Committee(models=[MaceModel(f, sha256=h) for f, h in zip(files, hashes)])


class CalibrationRefit:
    """Refits the calibration file `path` for `estimator` at `cutoff` (A) on labeled frames.

    form: the map ("alpha", the default: one factor, steady on few frames; or "auto" or any of
      `error_maps.FORMS`). window: fit on the last `window` frames only (None: all so far).
    estimator None: the committee of the models the labeled boxes were cut with
      (`recorded_committee` of the first frame fitted on).
    Each frame is predicted once (frames are known by their `box` name).
    """

    def __init__(self, path: str | Path, estimator=None, cutoff: float = 4.0,
                 form: str = "alpha", window: int | None = None):
        self.path = Path(path)
        self.estimator = estimator
        self.cutoff = checked_cutoff(cutoff, meaning="distance in A (the monitor's aggregation "
                                                     "radius)")
        if form != "auto" and form not in FORMS:
            raise ValueError(f"form must be 'auto' or one of {', '.join(FORMS)}, got {form!r}")
        self.form = form
        self.window = positive_integer("window", window, allow_none=True)
        if self.window == 1:
            raise ValueError("window must be 2 frames or more: a calibration is fitted on two "
                             "frames at least")
        self._predictions: dict[str, LabeledPrediction] = {}

    def update(self, labeled) -> Calibration | None:
        """Fit on the `labeled` frames (a file or a list of Atoms with REF_forces; the last
        `window` of them) and write the calibration to `path` atomically; None, and nothing
        written, while there are fewer than two."""
        frames = load_structures(labeled)
        chosen = frames[-self.window:] if self.window else frames
        if len(chosen) < 2:
            return None
        if self.estimator is None:
            self.estimator = recorded_committee(chosen[0])
        first = len(frames) - len(chosen)
        predictions = [self._prediction(atoms, first + i) for i, atoms in enumerate(chosen)]
        self._predictions = {p.atoms.info["box"]: p for p in predictions  # (the window's)
                             if "box" in p.atoms.info}
        source = (f"{labeled}" if isinstance(labeled, (str, Path)) else "labeled frames") + (
            f", last {len(chosen)} of {len(frames)} frames" if self.window else "")
        calibration = Calibration.from_predictions(self.estimator, predictions, self.cutoff,
                                                   self.form, source)
        calibration.save(self.path)
        return calibration

    def _prediction(self, atoms, index: int) -> LabeledPrediction:
        name = atoms.info.get("box")
        if name is not None and name in self._predictions:
            return self._predictions[name]
        prediction = LabeledPrediction.of(self.estimator, atoms,
                                          reference_forces(atoms, (LABELS,), index))
        if name is not None:
            self._predictions[name] = prediction
        return prediction
