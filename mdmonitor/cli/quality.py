"""`mdmonitor calibrate` and `mdmonitor evaluate`: how well the uncertainty points at the errors."""

from __future__ import annotations

from pathlib import Path

from . import options

FORMS = ("alpha", "element-alpha", "power", "element-power")  # quality.error_maps.FORMS


def add_commands(commands) -> None:
    """Add this group's commands to the `mdmonitor` subparsers `commands`."""
    calibrate = commands.add_parser(
        "calibrate", help="fit the expected force error as a function of the local uncertainty",
        description="Predicts labelled frames with the estimator and fits alpha = mean local "
                    "force error / mean local uncertainty at --cutoff (Heid et al. 2024, Eq. 3), "
                    "the force error of an atom being the mean absolute error of its x, y, z "
                    "components (eV/A), and a monotone map from the local uncertainty (or, with "
                    "several estimators, all their signals) to the expected error: alpha, a "
                    "factor per element, or a power law per element, chosen by held-out "
                    "likelihood unless --form says (a richer form only when its held-out NLL is "
                    "lower by more than 0.02 nats per force component). It warns when the map "
                    "is constant (the signal does not rank the errors). With the JSON file the "
                    "monitor takes thresholds as expected force errors: `mdmonitor md "
                    "--calibration alpha.json --error-threshold 0.1`, or MonitoredCalculator(..., "
                    "calibration='alpha.json', error_threshold=0.1). A few dozen frames like "
                    "those of your simulation suffice; it holds only for this estimator and "
                    "this cutoff.")
    options.add_labeled_options(calibrate)
    calibrate.add_argument("--form", default="auto", choices=("auto", *FORMS),
                           help="the map: alpha (one factor), element-alpha, power or "
                                "element-power (a_Z u^b_Z); auto (default) chooses by held-out "
                                "likelihood, the simplest form within 0.02 nats per force "
                                "component of the best")
    calibrate.add_argument("-o", "--output", type=Path, default=Path("alpha.json"),
                           help="output file (default alpha.json)")

    evaluate = commands.add_parser(
        "evaluate", help="report how well the uncertainty points at the real force errors",
        description="Predicts labelled frames with the estimator and compares force errors "
                    "with uncertainties per atom, aggregated within 1 to 6 A and per structure: "
                    "Spearman, Pearson, ROC-AUC, sparsification against the oracle, alpha "
                    "fitted on a fifth of the frames and checked on the rest, and the Gaussian "
                    "calibration of the force components; the calibrated expected error per "
                    "element and per condition (config_type), leave-one-condition-out, and "
                    "the radius of the best held-out correlation. Writes report.md, "
                    "report.json and PNG figures; --cutoff is the radius the figures show.")
    options.add_labeled_options(evaluate)
    evaluate.add_argument("--calibration-fraction", type=float, default=0.2,
                          help="fraction of the frames alpha is fitted on (default 0.2)")
    evaluate.add_argument("--form", default="auto", choices=("auto", *FORMS),
                          help="the error map checked per element and condition (default: "
                               "chosen by held-out likelihood, as `calibrate` does)")
    evaluate.add_argument("--seed", type=int, default=0,
                          help="seed of the random choice of those frames (default 0)")
    evaluate.add_argument("--out", type=Path, default=Path("report"),
                          help="output directory (default ./report)")

    calibrate.set_defaults(run=_calibrate)
    evaluate.set_defaults(run=_evaluate)


def _calibrate(args) -> int:
    from ase.data import chemical_symbols

    from ..quality.calibration import Calibration, uncertainty_unit
    from ..quality.error_maps import describe_choice

    estimator = options.estimator_from(args)
    calibration = Calibration.fit(estimator, args.labeled, args.cutoff,
                                  forces_key=args.forces_key, form=args.form)
    calibration.save(args.output)
    print(f"alpha = {calibration.alpha:.4g} eV/A per {uncertainty_unit(estimator)} at cutoff "
          f"{calibration.cutoff:g} A, from {calibration.n_frames} frames ({calibration.n_atoms} "
          f"atoms, mean local force error {calibration.mean_error:.4f} eV/A)")
    for form, nll in (calibration.held_out_nll or {}).items():
        print(f"  {form:>13}: held-out NLL {nll:.4f} nats per force component")
    if calibration.held_out_nll:
        print(f"  chosen: {describe_choice(calibration.held_out_nll, calibration.form)}")
    print(f"map: {calibration.form} of {', '.join(calibration.map.signals)}")
    for label, term in [("all elements", calibration.map.pooled),
                        *((chemical_symbols[z], t) for z, t in calibration.map.elements.items())]:
        exponents = ", ".join(f"{b:.3g}" for b in term.exponents)
        print(f"  {label:>12}: prefactor {term.prefactor:.4g}, exponents {exponents}")
    if calibration.constant:
        print(f"warning: the map is constant for {', '.join(calibration.constant)}: this signal "
              "does not rank the errors, and an error threshold fires on every atom or on none")
    if calibration.form == "alpha":
        print(f"wrote {args.output}: an expected local force error of 0.1 eV/A is a local "
              f"uncertainty of {0.1 / calibration.alpha:.4g}")
    else:
        print(f"wrote {args.output}: the monitor compares the expected error itself with "
              "error_threshold")
    return 0


def _evaluate(args) -> int:
    from ..quality.error_maps import describe_choice
    from ..quality.evaluation import constant_map_note, correlation, evaluate

    evaluation = evaluate(options.estimator_from(args), args.labeled, cutoff=args.cutoff,
                          calibration_fraction=args.calibration_fraction, seed=args.seed,
                          forces_key=args.forces_key, form=args.form)
    files = evaluation.write(args.out)
    print(f"{'level':>10} {'Spearman':>9} {'ROC-AUC':>8} {'alpha':>8} {'test MAE':>9} "
          f"{'test MAD':>9}  (eV/A)")
    for cutoff in (0.0, args.cutoff, None):
        level = evaluation.level(cutoff)
        print(f"{level.label:>10} {level.spearman:9.3f} {level.roc_auc:8.3f} {level.alpha:8.4g} "
              f"{level.test_mae:9.4f} {level.test_mad:9.4f}")
    calibrated = evaluation.calibrated
    print(f"expected error ({calibrated.form} map) on the test frames at {args.cutoff:g} A:")
    if calibrated.held_out_nll:
        print(f"  chosen by held-out NLL: "
              f"{describe_choice(calibrated.held_out_nll, calibrated.form)}")
    if calibrated.constant:
        print(f"  {constant_map_note(calibrated.constant)}")
    print(f"{'group':>18} {'atoms':>6} {'Spearman':>9} {'expected/observed':>18}")
    for group in calibrated.groups:
        print(f"{group.name:>18} {group.atoms:6d} {correlation(group.spearman_expected):>9} "
              f"{group.ratio:18.2f}")
    for transfer in evaluation.transfer:
        whole = transfer.groups[0]
        print(f"left out {transfer.condition}: Spearman {correlation(whole.spearman_expected)}, "
              f"expected/observed {whole.ratio:.2f} (map fitted on the other conditions)")
    best = evaluation.best_radius
    print("held-out Spearman of the expected error by radius: " + ", ".join(
        f"{r:g} A {correlation(v)}" for r, v in evaluation.radii.items())
        + ("; no best radius (no correlation at any)" if best is None else f"; best {best:g} A"))
    for component in evaluation.components:
        print(f"component {component.component} (readout of interaction layer "
              f"{component.component + 1}): median CPR {component.structure_rigidity:.4g} per "
              f"structure, {component.atomic_rigidity:.4g} per atom; Spearman of 1/sqrt(CPR) "
              f"with the error {component.spearman_atom:.3f} per atom, "
              f"{component.spearman_local:.3f} local")
    print("wrote " + ", ".join(str(path) for path in files))
    return 0
