"""The calibrated expected error checked per element and per condition, and across conditions.

A pooled correlation can hide that one element or one kind of structure (a surface, a defect)
is ranked or scaled wrongly. Here the expected local error of a `Calibration` (its error map)
is compared with the observed local error at one aggregation radius:

- `calibrated_metrics`: the map fitted on the calibration frames, checked on the test frames,
  pooled, per element and per condition (`atoms.info["config_type"]`);
- `leave_one_condition_out`: for every condition, the map fitted on all other conditions'
  frames and checked on that one: the honest test of a monitor meeting something new;
- `radius_scan`: the held-out Spearman correlation of the calibrated expected error at each
  aggregation radius, to pick the radius from the data.

Per group: Spearman of the raw local uncertainty and of the expected error with the local error,
and the ratio mean expected error / mean observed error (1 = calibrated on average).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ase.data import chemical_symbols

from .calibration import Calibration, map_samples, signal_names
from .metrics import spearman

__all__ = ["CalibratedMetrics", "ConditionTransfer", "GroupMetrics", "calibrated_metrics",
           "condition_of", "leave_one_condition_out", "radius_scan"]

UNLABELLED = "(no config_type)"
MIN_GROUP = 10  # atoms: fewer give no correlation


def condition_of(atoms) -> str:
    """The frame's condition: its config_type (extxyz info), else UNLABELLED."""
    return str(atoms.info.get("config_type", UNLABELLED))


@dataclass
class GroupMetrics:
    """One group's test atoms: `kind` "all", "element" or "condition", `name`; Spearman of the
    local uncertainty and of the expected error with the local error; mean local error and mean
    expected error (eV/A)."""

    kind: str
    name: str
    atoms: int
    spearman_uncertainty: float
    spearman_expected: float
    mean_error: float
    mean_expected_error: float

    @property
    def ratio(self) -> float:
        """Mean expected error / mean observed error: 1 is calibrated on average."""
        return self.mean_expected_error / self.mean_error

    def summary(self) -> dict:
        return {"kind": self.kind, "name": self.name, "atoms": self.atoms,
                "spearman_uncertainty": self.spearman_uncertainty,
                "spearman_expected_error": self.spearman_expected,
                "mean_error_eV_per_A": self.mean_error,
                "mean_expected_error_eV_per_A": self.mean_expected_error,
                "expected_over_observed": self.ratio}


@dataclass
class CalibratedMetrics:
    """The error map (`form`, with the held-out NLL of each form tried) fitted on the
    calibration frames at `cutoff` (A), and its GroupMetrics on the test frames. `constant`:
    the elements the map gives one expected error (`Calibration.constant`), whose expected
    error has no Spearman correlation."""

    cutoff: float
    form: str
    held_out_nll: dict | None
    groups: list[GroupMetrics]
    constant: list[str]

    def group(self, kind: str, name: str) -> GroupMetrics:
        return next(g for g in self.groups if g.kind == kind and g.name == name)

    def summary(self) -> dict:
        return {"cutoff_A": self.cutoff, "form": self.form, "held_out_nll": self.held_out_nll,
                "constant_map_elements": self.constant,
                "groups": [g.summary() for g in self.groups]}


@dataclass
class ConditionTransfer:
    """Leave-one-condition-out: the map (`form`) fitted on every other condition, checked on
    `condition` (`frames` frames): the whole condition and each of its elements."""

    condition: str
    frames: int
    form: str
    groups: list[GroupMetrics]

    def summary(self) -> dict:
        return {"condition": self.condition, "frames": self.frames, "form": self.form,
                "groups": [g.summary() for g in self.groups]}


def _checked(estimator, fitting: list, testing: list, cutoff: float, form: str,
             conditions: list[str]) -> tuple[Calibration, list[GroupMetrics]]:
    """Fit the map on `fitting` predictions and compute the GroupMetrics of `testing`, whose
    frames have the `conditions`."""
    calibration = Calibration.from_predictions(estimator, fitting, cutoff, form)
    samples = map_samples(testing, signal_names(estimator), cutoff)
    expected = calibration.map.expected_error(samples.signals, samples.numbers)
    condition = np.array(conditions)[samples.frame]
    groups = [_group("all", "all", np.ones(len(expected), bool), samples, expected)]
    groups += [_group("element", chemical_symbols[z], samples.numbers == z, samples, expected)
               for z in np.unique(samples.numbers)]
    if len(set(conditions)) > 1:
        groups += [_group("condition", c, condition == c, samples, expected)
                   for c in sorted(set(conditions))]
    return calibration, groups


def _group(kind: str, name: str, rows: np.ndarray, samples, expected) -> GroupMetrics:
    error, uncertainty = samples.error[rows], samples.signals[rows, 0]
    enough = rows.sum() >= MIN_GROUP and np.ptp(error) > 0
    return GroupMetrics(
        kind=kind, name=name, atoms=int(rows.sum()),
        spearman_uncertainty=spearman(uncertainty, error) if enough and np.ptp(uncertainty) > 0
        else float("nan"),
        spearman_expected=spearman(expected[rows], error) if enough and np.ptp(expected[rows]) > 0
        else float("nan"),
        mean_error=float(error.mean()), mean_expected_error=float(expected[rows].mean()))


def calibrated_metrics(estimator, predictions: list, in_test: np.ndarray, cutoff: float,
                       form: str = "auto") -> CalibratedMetrics:
    """The map of `form` fitted at `cutoff` (A) on the frames not `in_test`, checked on the
    others, pooled, per element and per condition."""
    fitting = [p for p, test in zip(predictions, in_test) if not test]
    testing = [p for p, test in zip(predictions, in_test) if test]
    calibration, groups = _checked(estimator, fitting, testing, cutoff, form,
                                   [condition_of(p.atoms) for p in testing])
    return CalibratedMetrics(cutoff, calibration.form, calibration.held_out_nll, groups,
                             calibration.constant)


def leave_one_condition_out(estimator, predictions: list, cutoff: float,
                            form: str = "auto") -> list[ConditionTransfer]:
    """For every condition (config_type) of `predictions`, the map fitted on all others and
    checked on it; empty with fewer than two conditions."""
    conditions = [condition_of(p.atoms) for p in predictions]
    transfers = []
    for left_out in sorted(set(conditions)) if len(set(conditions)) > 1 else ():
        testing = [p for p, c in zip(predictions, conditions) if c == left_out]
        fitting = [p for p, c in zip(predictions, conditions) if c != left_out]
        calibration, groups = _checked(estimator, fitting, testing, cutoff, form,
                                       [left_out] * len(testing))
        transfers.append(ConditionTransfer(left_out, len(testing), calibration.form, groups))
    return transfers


def radius_scan(estimator, predictions: list, in_test: np.ndarray, radii,
                form: str = "auto") -> dict[float, float]:
    """Per aggregation radius (A, > 0), the Spearman correlation on the test frames of the
    expected error (map fitted on the others) with the local error."""
    return {float(r): calibrated_metrics(estimator, predictions, in_test, r, form)
            .group("all", "all").spearman_expected for r in radii if r > 0}
