"""How well does an estimator's uncertainty point at its real force errors? A report.

An estimator predicts labelled frames (`calibration.predict_labeled`); per atom j the error is
e_j = (1/3) sum_k |F_jk - F_jk^ref| (eV/A) and the uncertainty u_j its ``atomic_uncertainty``.
Both are compared at every aggregation level: per atom (cutoff 0), as local means over the
neighbours within 1, 2, ..., 6 A (Heid et al. 2024, Eqs. 9-10; one sample per atom), and as
whole-structure means (Eqs. 7-8; one sample per frame). At each level, with mdmonitor.metrics:

- ranking, on all frames: Spearman and Pearson correlation, ROC-AUC (high error = the largest
  20 %), and the sparsification curve against the oracle with the area between them;
- calibration (seed 002 Eq. 3, Fig. 3e-f): the frames are split at random, alpha is fitted on
  `calibration_fraction` of them (`fit_alpha`), and on the other frames the predicted error
  alpha u is compared with e: mean absolute deviation (MAD) next to the mean error (MAE).

The Gaussian metrics (seed 004 Sec. 2.3, seed 003 Sec. 4.1) need a distribution, so they are
computed where one is claimed: for the force components of the test frames, each taken as
F_jk - F_jk^ref ~ N(0, sigma_j^2) with sigma_j = sqrt(pi/2) alpha u_j, the standard deviation
whose mean absolute value is the calibrated expected error alpha u_j. u_j is the atom's own
uncertainty, or its local uncertainty at `cutoff` (alpha fitted between the atoms' errors and
that u_j on the calibration frames): the aggregated uncertainty as a predictor of each atom's
error. They give the calibration curve, the miscalibration area (over- and under-confident
parts), the calibrated NLL (variance a sigma^2 + b, a = 1 and b = 0 for a perfect sigma) and
the sharpness (eV/A). A local mean of |errors| has no Gaussian distribution to test, so the
errors stay per atom; for the aggregated errors alpha and the MAD are the calibration check.

The calibration file's own map (alpha, per element or power law, of one signal or, for a
`Combined` estimator, several; `error_maps`) is checked the same way at the report's cutoff,
pooled, per element and per condition (config_type), together with leave-one-condition-out
(fitted on all conditions but one, checked on that one) and the held-out correlation of the
calibrated expected error at every radius, to pick the radius (`groups`). A map that gives
every atom of an element the same expected error (a signal that does not rank the errors) has
no correlation: the report says so, writes null for it in report.json and picks no radius.

For an LLPR the report adds the component-wise prediction rigidity (CPR, seed 000 Sec. 5) of
every readout of its model: how firmly the training data pin down each interaction layer's
share of the energy, and whether that component's uncertainty 1/sqrt(CPR_j) ranks the errors.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..common.settings import positive_number
from .calibration import (
    describe_estimator,
    estimator_identity,
    fit_alpha,
    predict_labeled,
    uncertainty_unit,
)
from .error_maps import describe_choice
from .groups import (
    CalibratedMetrics,
    ConditionTransfer,
    calibrated_metrics,
    leave_one_condition_out,
    radius_scan,
)
from .metrics import (
    CalibratedNLL,
    Miscalibration,
    Sparsification,
    calibrated_nll,
    miscalibration_area,
    pearson,
    roc_auc,
    sharpness,
    sparsification,
    spearman,
)

__all__ = ["ComponentMetrics", "Evaluation", "GaussianMetrics", "LevelMetrics", "evaluate"]

DEFAULT_CUTOFFS = (0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0)
FIGURES = {
    "error_vs_uncertainty.png": "error against uncertainty, per atom and local (hexbin, log axes)",
    "sparsification.png": "sparsification curves against the oracle, per atom and local",
    "calibration_curve.png": "observed against expected fraction of force components inside "
                             "the Gaussian intervals (calibrated sigma)",
    "correlation_vs_cutoff.png": "Spearman, Pearson and ROC-AUC against the aggregation cutoff",
    "predicted_vs_true.png": "alpha x local uncertainty against the local error on the test "
                             "frames (seed 002 Fig. 3f)",
}


@dataclass
class LevelMetrics:
    """Metrics of one aggregation level: `cutoff` in A (0 = per atom, None = whole structure).

    Samples (`error` in eV/A, `uncertainty`, `test` marking those of test frames) are kept for
    the figures. alpha is fitted on the calibration frames; test_mae is the mean error and
    test_mad the mean |alpha u - e| on the test frames (eV/A).
    """

    cutoff: float | None
    spearman: float
    pearson: float
    roc_auc: float
    sparsification: Sparsification
    alpha: float
    test_mae: float
    test_mad: float
    error: np.ndarray = field(repr=False)
    uncertainty: np.ndarray = field(repr=False)
    test: np.ndarray = field(repr=False)

    @property
    def label(self) -> str:
        if self.cutoff is None:
            return "structure"
        return "per atom" if self.cutoff == 0 else f"{self.cutoff:g} A"

    def summary(self) -> dict:
        return {"level": self.label, "cutoff_A": self.cutoff, "samples": len(self.error),
                "spearman": self.spearman, "pearson": self.pearson, "roc_auc": self.roc_auc,
                "sparsification_area": self.sparsification.area, "alpha": self.alpha,
                "test_mae_eV_per_A": self.test_mae, "test_mad_eV_per_A": self.test_mad}


@dataclass
class GaussianMetrics:
    """Force components of the test frames against N(0, sigma_j^2), sigma_j = sqrt(pi/2) alpha
    u_j with u_j aggregated at `cutoff` (A, 0 = the atom's own): `miscalibration`
    (metrics.Miscalibration, with the calibration curve), `nll` (metrics.CalibratedNLL) and
    `sharpness` = sqrt(mean sigma^2) (eV/A)."""

    cutoff: float
    miscalibration: Miscalibration
    nll: CalibratedNLL
    sharpness: float

    @property
    def label(self) -> str:
        return "per atom" if self.cutoff == 0 else f"local {self.cutoff:g} A"

    def summary(self) -> dict:
        return {"cutoff_A": self.cutoff, "miscalibration_area": self.miscalibration.area,
                "overconfident_area": self.miscalibration.overconfident,
                "underconfident_area": self.miscalibration.underconfident,
                "calibrated_nll": self.nll.nll, "nll_a": self.nll.a, "nll_b_eV2_per_A2": self.nll.b,
                "sharpness_eV_per_A": self.sharpness}


@dataclass
class ComponentMetrics:
    """CPR of one additive component (readout `component` of the model, i.e. its interaction
    layer) over the frames: the median CPR of the frames' total energies from that readout and
    of the atoms' (dimensionless), and the Spearman correlation of 1/sqrt(CPR_j) with the force
    error, per atom and local at `cutoff` (A)."""

    component: int
    structure_rigidity: float
    atomic_rigidity: float
    spearman_atom: float
    spearman_local: float
    cutoff: float

    def summary(self) -> dict:
        return {"component": self.component, "median_structure_cpr": self.structure_rigidity,
                "median_atomic_cpr": self.atomic_rigidity, "spearman_atom": self.spearman_atom,
                "spearman_local": self.spearman_local, "cutoff_A": self.cutoff}


@dataclass
class Evaluation:
    """Everything the report shows; `evaluate` builds it, `write` writes it.

    predictions: the `LabeledPrediction` of every frame; calibration_frames: indices of the
    frames alpha was fitted on (the others are test frames); cutoff: the aggregation radius
    (A) shown in the figures beside the per-atom values.
    """

    estimator: dict
    unit: str
    source: str | None
    predictions: list = field(repr=False)
    calibration_frames: np.ndarray
    cutoff: float
    levels: list
    gaussian: list  # GaussianMetrics per atom and at `cutoff`
    calibrated: CalibratedMetrics | None = None  # the error map, pooled and per group
    transfer: list[ConditionTransfer] = field(default_factory=list)  # leave-one-condition-out
    radii: dict = field(default_factory=dict)  # radius (A) -> held-out Spearman, calibrated
    components: list = field(default_factory=list)  # ComponentMetrics per readout (LLPR only)

    @property
    def best_radius(self) -> float | None:
        """The aggregation radius (A) of the highest held-out calibrated Spearman; None when no
        radius has one (NaN: a constant expected error, or too few atoms)."""
        ranked = {r: v for r, v in self.radii.items() if not math.isnan(v)}
        return max(ranked, key=ranked.get) if ranked else None

    def level(self, cutoff: float | None) -> LevelMetrics:
        """The metrics at `cutoff` (A; 0 = per atom, None = whole structure)."""
        for level in self.levels:
            if level.cutoff == cutoff:
                return level
        raise KeyError(f"no aggregation level at cutoff {cutoff!r}; evaluated: "
                       f"{[level.cutoff for level in self.levels]}")

    def summary(self) -> dict:
        """The report as a JSON-ready dictionary."""
        return {
            "estimator": self.estimator, "uncertainty_unit": self.unit, "source": self.source,
            "frames": len(self.predictions),
            "atoms": int(sum(len(p.atoms) for p in self.predictions)),
            "calibration_frames": [int(i) for i in self.calibration_frames],
            "cutoff_A": self.cutoff,
            "error": "e_j = (1/3) sum_k |F_jk - F_jk^ref| (eV/A), aggregated like the uncertainty",
            "levels": [level.summary() for level in self.levels],
            "gaussian_force_components": [g.summary() for g in self.gaussian],
            "calibrated": self.calibrated.summary() if self.calibrated else None,
            "leave_one_condition_out": [t.summary() for t in self.transfer],
            "held_out_spearman_by_radius": {f"{r:g}": v for r, v in self.radii.items()},
            "best_radius_A": self.best_radius,
            "component_rigidity": [c.summary() for c in self.components],
            "figures": FIGURES,
        }

    def write(self, out: str | Path) -> list[Path]:
        """Write report.md, report.json (an undefined value, NaN, as null) and the FIGURES
        PNGs into directory `out`."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        summary = _nan_as_none(self.summary())
        (out / "report.json").write_text(json.dumps(summary, indent=2, allow_nan=False) + "\n")
        (out / "report.md").write_text(self.markdown())
        per_atom, local = self.level(0.0), self.level(self.cutoff)
        _plot_error_vs_uncertainty([per_atom, local], self.unit, out / "error_vs_uncertainty.png")
        _plot_sparsification([per_atom, local], out / "sparsification.png")
        _plot_calibration_curve(self.gaussian, out / "calibration_curve.png")
        _plot_correlation_vs_cutoff(self.levels, out / "correlation_vs_cutoff.png")
        _plot_predicted_vs_true(local, out / "predicted_vs_true.png")
        return [out / "report.md", out / "report.json", *(out / name for name in FIGURES)]

    def markdown(self) -> str:
        """The report as Markdown (what report.md holds)."""
        summary = self.summary()
        n_test = summary["frames"] - len(self.calibration_frames)
        lines = [
            "# Uncertainty-quality report", "",
            f"- estimator: {describe_estimator(self.estimator)}",
            f"- data: {summary['frames']} labelled frames, {summary['atoms']} atoms"
            + (f" from `{self.source}`" if self.source else ""),
            f"- uncertainty u_j: the estimator's atomic uncertainty ({self.unit})",
            "- error e_j: (1/3) sum_k |F_jk - F_jk^ref|, the mean absolute force-component "
            "error of atom j (eV/A); both aggregated alike (mean over the atom and its "
            "neighbours within the cutoff; \"structure\" = mean over the frame)",
            f"- calibration (e = alpha u, seed 002 Eq. 3; alpha in eV/A per {self.unit}): "
            f"alpha fitted on {len(self.calibration_frames)} random frames, MAE and MAD "
            f"(mean |alpha u - e|) on the other {n_test}",
            "", "## Ranking and calibration by aggregation level", "",
            "| level | samples | Spearman | Pearson | ROC-AUC | sparsification area | alpha | "
            "test MAE (eV/A) | test MAD (eV/A) |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for level in self.levels:
            row = level.summary()
            lines.append(
                f"| {row['level']} | {row['samples']} | {row['spearman']:.3f} | "
                f"{row['pearson']:.3f} | {row['roc_auc']:.3f} | "
                f"{row['sparsification_area']:.3f} | {row['alpha']:.4g} | "
                f"{row['test_mae_eV_per_A']:.4f} | {row['test_mad_eV_per_A']:.4f} |")
        lines += [
            "", "ROC-AUC: high error = the largest 20 % of the errors. Sparsification area: "
            "between the uncertainty-ordered and the error-ordered (oracle) curve, divided by "
            "the MAE; 0 is a perfect ranking.", "",
            "## Gaussian calibration of the force components (test frames)", "",
            "Each component error taken as N(0, sigma_j^2), sigma_j = sqrt(pi/2) alpha u_j, with "
            "u_j the atom's own or its local uncertainty and alpha fitted for it on the "
            "calibration frames. NLL: calibrated, variance a sigma^2 + b.", "",
            "| u_j | miscalibration area | over-confident | under-confident | NLL | a | "
            "b (eV^2/A^2) | sharpness (eV/A) |", "|---|---|---|---|---|---|---|---|"]
        for gaussian in self.gaussian:
            row = gaussian.summary()
            lines.append(
                f"| {gaussian.label} | "
                f"{row['miscalibration_area']:.3f} | {row['overconfident_area']:.3f} | "
                f"{row['underconfident_area']:.3f} | {row['calibrated_nll']:.3f} | "
                f"{row['nll_a']:.3g} | {row['nll_b_eV2_per_A2']:.3g} | "
                f"{row['sharpness_eV_per_A']:.4f} |")
        lines += self._group_markdown()
        if self.components:
            lines += [
                "", "## Component-wise prediction rigidity (CPR) of the readouts", "",
                "Component C is readout C of the model (interaction layer C + 1); its CPR uses "
                "the derivative of that readout's energy with respect to all last-layer weights "
                "(zero outside its block) in the LLPR's Gauss-Newton matrix (seed 000 Sec. 5). "
                "A CPR far below the PR means the data leave the split of the energy between "
                "the components loose.", "",
                "| component | median CPR (structure) | median CPR (atom) | Spearman 1/sqrt(CPR) "
                f"vs error, atom | local {self.cutoff:g} A |", "|---|---|---|---|---|"]
            lines += [f"| {c.component} | {c.structure_rigidity:.4g} | {c.atomic_rigidity:.4g} "
                      f"| {c.spearman_atom:.3f} | {c.spearman_local:.3f} |"
                      for c in self.components]
        lines += ["", "## Figures", ""]
        lines += [f"![{caption}]({name})" for name, caption in FIGURES.items()]
        return "\n".join(lines) + "\n"

    def _group_markdown(self) -> list[str]:
        """The sections on the calibrated map: per group, across conditions, by radius."""
        if self.calibrated is None:
            return []
        header = ["| group | atoms | Spearman u | Spearman expected | mean error (eV/A) | "
                  "mean expected (eV/A) | expected / observed |", "|---|---|---|---|---|---|---|"]
        lines = ["", f"## Calibrated expected error per element and condition (test frames, "
                 f"{self.cutoff:g} A)", "",
                 f"Map: {self.calibrated.form}, fitted on the calibration frames"
                 + (" and chosen by held-out likelihood (NLL per force component: "
                    + ", ".join(f"{f} {v:.3f}" for f, v in self.calibrated.held_out_nll.items())
                    + "); " + describe_choice(self.calibrated.held_out_nll, self.calibrated.form)
                    if self.calibrated.held_out_nll else "") + ".", ""]
        if self.calibrated.constant:
            lines += [constant_map_note(self.calibrated.constant), ""]
        lines += header
        lines += [_group_row(g) for g in self.calibrated.groups]
        if self.transfer:
            lines += ["", "## Leave one condition out", "",
                      "Map fitted on all other conditions' frames, checked on the one left "
                      "out.", "", "| left out | frames | form | " + header[0][2:],
                      "|---|---|---|" + header[1][1:]]
            lines += [f"| {t.condition} | {t.frames} | {t.form} " + _group_row(g)
                      for t in self.transfer for g in t.groups]
        if self.radii:
            lines += ["", "## Held-out Spearman of the calibrated expected error by radius", "",
                      "| radius (A) | " + " | ".join(f"{r:g}" for r in self.radii) + " |",
                      "|---|" + "---|" * len(self.radii),
                      "| Spearman | " + " | ".join(correlation(v) for v in self.radii.values())
                      + " |", "", "No best radius: no radius has a correlation."
                      if self.best_radius is None else f"Best radius: {self.best_radius:g} A."]
        return lines


def constant_map_note(elements: list[str]) -> str:
    """What a map constant for `elements` means, in words."""
    return (f"The map gives every {', '.join(elements)} atom the same expected error (constant "
            "map): this signal does not rank the errors there, and its expected error has no "
            "correlation (n/a, null in report.json).")


def correlation(value: float) -> str:
    """A correlation to 3 decimals, "n/a" when undefined (NaN)."""
    return "n/a" if math.isnan(value) else f"{value:.3f}"


def _nan_as_none(value):
    """`value` (dicts, lists, numbers) with every NaN or infinite float replaced by None, which
    JSON writes as null (bare NaN is not JSON)."""
    if isinstance(value, dict):
        return {key: _nan_as_none(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_nan_as_none(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def evaluate(estimator, structures, cutoff: float = 4.0, cutoffs=DEFAULT_CUTOFFS,
             calibration_fraction: float = 0.2, seed: int = 0, forces_key: str | None = None,
             progress: bool = True, form: str = "auto") -> Evaluation:
    """Evaluate `estimator` on labelled `structures` (file or list of Atoms; labels as in
    `calibration.reference_forces`, under `forces_key` or REF_forces/forces).

    Levels: `cutoffs` (A, 0 = per atom) plus `cutoff`, the radius shown in the figures, plus the
    whole structure. alpha and the error map of `form` are fitted on max(1,
    round(calibration_fraction x frames)) frames drawn with `np.random.default_rng(seed)`; the
    rest are test frames.
    """
    cutoff = positive_number("cutoff", cutoff, meaning="distance in A")
    if not 0.0 < calibration_fraction < 1.0:
        raise ValueError(f"calibration_fraction must be in (0, 1), got {calibration_fraction!r}")
    radii = sorted({float(c) for c in cutoffs} | {0.0, cutoff})
    if radii[0] < 0:
        raise ValueError(f"aggregation cutoffs must be >= 0 A, got {radii[0]}")
    predictions = predict_labeled(estimator, structures, forces_key, progress)
    n_frames = len(predictions)
    n_calibration = min(max(1, round(calibration_fraction * n_frames)), n_frames - 1)
    order = np.random.default_rng(seed).permutation(n_frames)
    calibration_frames = np.sort(order[:n_calibration])
    in_test = np.ones(n_frames, dtype=bool)
    in_test[calibration_frames] = False

    levels = [_level_metrics(predictions, level_cutoff, in_test)
              for level_cutoff in [*radii, None]]
    gaussian = [_gaussian_metrics(predictions, radius, in_test, seed)
                for radius in (0.0, cutoff)]
    components = (_component_metrics(estimator, predictions, cutoff)
                  if hasattr(estimator, "atomic_component_rigidity") else [])
    calibrated = calibrated_metrics(estimator, predictions, in_test, cutoff, form)
    transfer = leave_one_condition_out(estimator, predictions, cutoff, form)
    radii_scan = radius_scan(estimator, predictions, in_test, radii, form)
    source = str(structures) if isinstance(structures, (str, Path)) else None
    return Evaluation(estimator=estimator_identity(estimator), unit=uncertainty_unit(estimator),
                      source=source, predictions=predictions,
                      calibration_frames=calibration_frames, cutoff=cutoff,
                      levels=levels, gaussian=gaussian, calibrated=calibrated,
                      transfer=transfer, radii=radii_scan, components=components)


def _component_metrics(estimator, predictions, cutoff: float) -> list[ComponentMetrics]:
    """ComponentMetrics of every readout of an LLPR's model over the labelled frames."""
    structure = np.stack([estimator.component_rigidity(p.atoms) for p in predictions])
    atomic = [estimator.atomic_component_rigidity(p.atoms) for p in predictions]
    errors = {radius: np.concatenate([p.local(p.atomic_error, radius) for p in predictions])
              for radius in (0.0, cutoff)}
    metrics = []
    for c in range(structure.shape[1]):
        uncertainty = {radius: np.concatenate([p.local(1.0 / np.sqrt(a[:, c]), radius)
                                               for p, a in zip(predictions, atomic)])
                       for radius in (0.0, cutoff)}
        metrics.append(ComponentMetrics(
            component=c, structure_rigidity=float(np.median(structure[:, c])),
            atomic_rigidity=float(np.median(np.concatenate([a[:, c] for a in atomic]))),
            spearman_atom=spearman(uncertainty[0.0], errors[0.0]),
            spearman_local=spearman(uncertainty[cutoff], errors[cutoff]), cutoff=cutoff))
    return metrics


def _level_metrics(predictions, cutoff: float | None, in_test: np.ndarray) -> LevelMetrics:
    """Pool the aggregated errors and uncertainties of all frames and compute the metrics."""
    errors = [p.local(p.atomic_error, cutoff) for p in predictions]
    uncertainties = [p.local(p.atomic_uncertainty, cutoff) for p in predictions]
    test = np.concatenate([np.full(len(e), t) for e, t in zip(errors, in_test)])
    error, uncertainty = np.concatenate(errors), np.concatenate(uncertainties)
    alpha = fit_alpha(error[~test], uncertainty[~test])
    return LevelMetrics(
        cutoff=cutoff, spearman=spearman(uncertainty, error), pearson=pearson(uncertainty, error),
        roc_auc=roc_auc(uncertainty, error), sparsification=sparsification(uncertainty, error),
        alpha=alpha, test_mae=float(error[test].mean()),
        test_mad=float(np.abs(alpha * uncertainty[test] - error[test]).mean()),
        error=error, uncertainty=uncertainty, test=test)


def _gaussian_metrics(predictions, cutoff: float, in_test: np.ndarray,
                      seed: int) -> GaussianMetrics:
    """Gaussian metrics of the test frames' force components, sigma_j from the uncertainty
    aggregated at `cutoff` (A, 0 = per atom) with alpha fitted against the per-atom errors of
    the calibration frames."""
    uncertainties = [p.local(p.atomic_uncertainty, cutoff) for p in predictions]
    fitting = np.flatnonzero(~in_test)
    alpha = fit_alpha(np.concatenate([predictions[i].atomic_error for i in fitting]),
                      np.concatenate([uncertainties[i] for i in fitting]))
    test = np.flatnonzero(in_test)
    component_error = np.concatenate([predictions[i].force_error.ravel() for i in test])
    sigma = math.sqrt(math.pi / 2) * alpha * np.concatenate(
        [np.repeat(uncertainties[i], 3) for i in test])
    return GaussianMetrics(cutoff=cutoff, miscalibration=miscalibration_area(sigma, component_error),
                           nll=calibrated_nll(sigma, component_error, seed=seed),
                           sharpness=sharpness(sigma))


def _group_row(group) -> str:
    return (f"| {group.name if group.kind != 'all' else 'all'} | {group.atoms} | "
            f"{correlation(group.spearman_uncertainty)} | "
            f"{correlation(group.spearman_expected)} | "
            f"{group.mean_error:.4f} | {group.mean_expected_error:.4f} | {group.ratio:.2f} |")


# --- figures (matplotlib's object API: no pyplot state, Agg rendering) ---------------------------


def _figure(n_panels: int, width: float = 4.2, height: float = 3.6):
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width * n_panels, height), dpi=100, layout="constrained")
    return figure, figure.subplots(1, n_panels, squeeze=False)[0]


def _hexbin(figure, ax, x, y, log_axes: bool = False) -> None:
    """Hexagonal histogram of (x, y) pairs of atoms, with its (logarithmic) colour bar."""
    scale = "log" if log_axes else "linear"
    counts = ax.hexbin(x, y, xscale=scale, yscale=scale, bins="log", gridsize=40, mincnt=1,
                       cmap="viridis")
    colour_bar = figure.colorbar(counts, ax=ax, label="atoms per hexagon")
    for axis in (ax.xaxis, ax.yaxis, colour_bar.ax.yaxis) if log_axes else (colour_bar.ax.yaxis,):
        _plain_log_ticks(axis)


def _plain_log_ticks(axis) -> None:
    """Ticks of a log axis at 1, 2 and 5 times powers of ten, written as plain numbers:
    matplotlib's default labels its minor ticks below a decade of range, and those overlapped."""
    from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter

    axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FormatStrFormatter("%g"))
    axis.set_minor_formatter(NullFormatter())


def _plot_error_vs_uncertainty(levels, unit: str, path: Path):
    """The figure (also saved to `path`): error against uncertainty, one panel per level."""
    figure, axes = _figure(len(levels), width=4.8)
    for ax, level in zip(axes, levels):
        shown = (level.uncertainty > 0) & (level.error > 0)  # log axes
        _hexbin(figure, ax, level.uncertainty[shown], level.error[shown], log_axes=True)
        line = np.geomspace(level.uncertainty[shown].min(), level.uncertainty[shown].max(), 2)
        ax.plot(line, level.alpha * line, "r--", lw=1, label=f"e = {level.alpha:.3g} u")
        ax.set_xlabel(f"uncertainty u ({unit})")
        ax.set_ylabel("force error e (eV/A)")
        ax.set_title(f"{level.label}: Spearman {level.spearman:.2f}")
        ax.legend(frameon=False, loc="upper left")
    figure.savefig(path)
    return figure


def _plot_sparsification(levels, path: Path) -> None:
    figure, axes = _figure(len(levels))
    for ax, level in zip(axes, levels):
        curve = level.sparsification
        ax.plot(curve.fractions, curve.curve, label="ordered by uncertainty")
        ax.plot(curve.fractions, curve.oracle, "k--", label="oracle (ordered by error)")
        ax.set_xlabel("fraction of samples removed")
        ax.set_ylabel("mean error of the rest (eV/A)")
        ax.set_title(f"{level.label}: area {curve.area:.3f}")
        ax.legend(frameon=False)
    figure.savefig(path)


def _plot_calibration_curve(gaussians, path: Path) -> None:
    figure, (ax,) = _figure(1)
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="ideal")
    for gaussian in gaussians:
        curve = gaussian.miscalibration
        ax.plot(curve.expected, curve.observed, label=f"u {gaussian.label}: area {curve.area:.3f}")
        ax.fill_between(curve.expected, curve.expected, curve.observed, alpha=0.15)
    ax.set_xlabel("expected fraction inside the interval")
    ax.set_ylabel("observed fraction of force components")
    ax.legend(frameon=False, loc="upper left")
    figure.savefig(path)


def _plot_correlation_vs_cutoff(levels, path: Path) -> None:
    figure, (ax,) = _figure(1, width=5.0)
    radial = [level for level in levels if level.cutoff is not None]
    structure = [level for level in levels if level.cutoff is None]
    radii = [level.cutoff for level in radial]
    for name, label, style in (("spearman", "Spearman", "o-"), ("pearson", "Pearson", "s-"),
                               ("roc_auc", "ROC-AUC", "^-")):
        lines = ax.plot(radii, [getattr(level, name) for level in radial], style, label=label)
        for level in structure:
            ax.axhline(getattr(level, name), color=lines[0].get_color(), ls=":", lw=1)
    ax.set_xlabel("aggregation cutoff (A); 0 = per atom; dotted: whole structure")
    ax.set_ylabel("correlation / AUC")
    ax.legend(frameon=False)
    figure.savefig(path)


def _plot_predicted_vs_true(level: LevelMetrics, path: Path) -> None:
    figure, (ax,) = _figure(1, width=4.8)
    predicted, true = level.alpha * level.uncertainty[level.test], level.error[level.test]
    _hexbin(figure, ax, predicted, true)
    top = max(predicted.max(), true.max())
    ax.plot([0, top], [0, top], "r--", lw=1)
    ax.set_xlabel(f"predicted local error alpha u (eV/A), alpha = {level.alpha:.3g}")
    ax.set_ylabel("local error e (eV/A)")
    ax.set_title(f"{level.label}, test frames: MAD {level.test_mad:.4f}, "
                 f"MAE {level.test_mae:.4f} eV/A", fontsize=9)
    figure.savefig(path)
