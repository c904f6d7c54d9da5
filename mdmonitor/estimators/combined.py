"""Several uncertainty signals of one frame at once, for a calibration that combines them.

`Combined({"committee": committee, "llpr": llpr, "gmm": gmm})` predicts with every estimator:
energy, forces, stress, extras and atomic_uncertainty are those of the first (it drives the
dynamics), and extra["signals"] holds each estimator's atomic_uncertainty by name. Alone the
signals rank atoms on different scales; a `Calibration` fitted for the combination turns their
local values into one expected force error (`quality.error_maps`). Each estimator evaluates its
own model(s), so a call costs the sum of theirs.
"""

from __future__ import annotations

from .prediction import Prediction


class Combined:
    """Named estimators evaluated together (see the module); the first drives."""

    kind = "combined"

    def __init__(self, estimators: dict):
        if not isinstance(estimators, dict) or len(estimators) < 2:
            raise ValueError("Combined takes a dict of at least two named estimators, e.g. "
                             "{'committee': committee, 'llpr': llpr}")
        for name, estimator in estimators.items():
            if not isinstance(name, str) or not hasattr(estimator, "predict"):
                raise TypeError(f"signal {name!r}: expected a name and an estimator with "
                                f"predict(atoms), got {type(estimator).__name__}")
        self.estimators = dict(estimators)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.estimators)

    def predict(self, atoms) -> Prediction:
        """The first estimator's prediction, with every estimator's atomic_uncertainty in
        extra["signals"]."""
        predictions = {name: e.predict(atoms) for name, e in self.estimators.items()}
        first = predictions[self.names[0]]
        signals = {name: p.atomic_uncertainty for name, p in predictions.items()}
        return Prediction(energy=first.energy, forces=first.forces, stress=first.stress,
                          atomic_uncertainty=first.atomic_uncertainty,
                          extra={**first.extra, "signals": signals})
