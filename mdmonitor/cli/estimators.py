"""`mdmonitor fit-llpr`, `log-errors`, `fit-ltau`, `fit-gmm`: fitting single-model estimators."""

from __future__ import annotations

from pathlib import Path

from . import options


def add_commands(commands) -> None:
    """Add this group's commands to the `mdmonitor` subparsers `commands`."""
    fit = commands.add_parser(
        "fit-llpr", help="fit a last-layer LPR estimator for one MACE model",
        description="Accumulates the Gauss-Newton matrix of the model's readout weights over "
                    "the training structures (energies, and forces unless --no-forces; no "
                    "labels needed) and writes it to one .npz file.")
    fit.add_argument("model", type=Path, help="MACE model file")
    fit.add_argument("structures", type=Path, help="training structures, any ASE-readable file")
    fit.add_argument("-o", "--output", type=Path, default=Path("llpr.npz"),
                     help="output file (default llpr.npz)")
    fit.add_argument("--no-forces", action="store_true", help="energy terms only")
    fit.add_argument("--force-weight", type=float, default=1.0,
                     help="weight of the force terms relative to energy terms (default 1)")
    fit.add_argument("--regularizer", type=float, default=None,
                     help="zeta^2 added to the diagonal; default: smallest that keeps the "
                          "matrix well conditioned")
    fit.add_argument("--scale", type=float, default=1.0,
                     help="uncertainty = scale / sqrt(LPR) (default 1)")
    fit.add_argument("--element-relative", action="store_true",
                     help="uncertainty relative to the mean 1/LPR of the training atoms of "
                          "each atom's element: for models of several elements, so that "
                          "composition alone does not make an atom look uncertain")
    target = fit.add_argument_group(
        "force uncertainty", "--target forces: the spread of each atom's force (eV/A) under the "
                             "last-layer posterior, the committee's measure from one model")
    target.add_argument("--target", choices=("energy", "forces"), default="energy",
                        help="energy: scale / sqrt(LPR) of the atomic energies (default); "
                             "forces: the posterior spread of the forces")
    target.add_argument("--samples", type=int, default=4,
                        help="with --target forces: K last-layer weight vectors drawn from the "
                             "posterior, a last-layer committee costing about K extra "
                             "backward passes per monitored step (default 4); 0 for the "
                             "exact variance (one backward pass per last-layer feature)")
    target.add_argument("--seed", type=int, default=0, help="seed of the K weight vectors")
    target.add_argument("--validation", type=Path, default=None,
                        help="with --target forces: labelled frames (reference forces) on "
                             "which alpha is fitted as the committee's, mean |force error| = "
                             "alpha x mean spread over all atoms; it replaces --scale")
    options.add_forces_key_option(target)

    log = commands.add_parser(
        "log-errors", help="per-atom training force errors at every epoch, for LTAU",
        description="Evaluates every epoch's checkpoint of a MACE training run (mace_run_train "
                    "--save_all_checkpoints) on the labeled training structures and writes "
                    "|F_ref - F_epoch| of every atom (eV/A) to one .npz error log.")
    log.add_argument("model", type=Path, help="the trained MACE model file (its architecture)")
    log.add_argument("checkpoints", type=Path, help="directory of *_epoch-N.pt checkpoints")
    log.add_argument("structures", type=Path, help="the labeled training structures")
    log.add_argument("-o", "--output", type=Path, default=Path("errors.npz"),
                     help="output file (default errors.npz)")
    options.add_forces_key_option(log)

    ltau = commands.add_parser(
        "fit-ltau", help="fit an LTAU estimator (training-error PDFs + latent neighbours)",
        description="Bins each training atom's logged force errors into a PDF and indexes the "
                    "model's latent descriptors of the training atoms with FAISS, per element "
                    "(Vita et al., LTAU-FF).")
    ltau.add_argument("model", type=Path, help="MACE model file")
    ltau.add_argument("structures", type=Path, help="training structures, as in the error log")
    ltau.add_argument("errors", type=Path, help="error log from `mdmonitor log-errors`")
    ltau.add_argument("-o", "--output", type=Path, default=Path("ltau.npz"),
                      help="output file (default ltau.npz)")
    ltau.add_argument("-k", "--neighbours", type=int, default=10,
                      help="nearest training atoms averaged (default 10)")
    ltau.add_argument("--bins", type=int, default=1000, help="PDF bins (default 1000)")
    ltau.add_argument("--error-max", type=float, default=None,
                      help="upper edge of the last bin, eV/A (default: largest logged error)")
    ltau.add_argument("--index", choices=("auto", "flat", "hnsw"), default="auto",
                      help="exact FAISS search, HNSW, or HNSW above 100000 atoms (default auto)")
    ltau.add_argument("--first-epoch", type=int, default=0,
                      help="leave out the errors of the epochs before this one, a barely "
                           "trained model in a short training (default 0: all epochs)")
    ltau.add_argument("--ood-quantile", type=float, default=0.999,
                      help="out of domain beyond this quantile of the training atoms' nearest-"
                           "neighbour distances (default 0.999)")

    gmm = commands.add_parser(
        "fit-gmm", help="fit a Gaussian mixture on a model's latent descriptors",
        description="Fits one full-covariance Gaussian mixture per element on the training "
                    "atoms' latent descriptors (Tan et al., Eq. 11); uncertainty is the "
                    "negative log-likelihood. No labels needed.")
    gmm.add_argument("model", type=Path, help="MACE model file")
    gmm.add_argument("structures", type=Path, help="training structures, any ASE-readable file")
    gmm.add_argument("-o", "--output", type=Path, default=Path("gmm.npz"),
                     help="output file (default gmm.npz)")
    gmm.add_argument("--components", type=int, default=None,
                     help="Gaussians per element (default: lowest BIC up to --max-components)")
    gmm.add_argument("--max-components", type=int, default=8, help="(default 8)")
    gmm.add_argument("--seed", type=int, default=0, help="k-means initialisation seed")

    fit.set_defaults(run=_fit_llpr)
    log.set_defaults(run=_log_errors)
    ltau.set_defaults(run=_fit_ltau)
    gmm.set_defaults(run=_fit_gmm)


def _fit_llpr(args) -> int:
    from ..estimators.llpr import LastLayerLPR
    from ..quality.calibration import posterior_alpha

    forces_target = args.target == "forces"
    if not forces_target and (args.validation is not None or args.forces_key is not None):
        raise ValueError("--validation and --forces-key fit alpha of --target forces")
    estimator = LastLayerLPR.fit(args.model, args.structures, forces=not args.no_forces,
                                 regularizer=args.regularizer, force_weight=args.force_weight,
                                 scale=args.scale, element_relative=args.element_relative,
                                 target=args.target,
                                 samples=args.samples if forces_target else 0, seed=args.seed)
    fitted = ""
    if args.validation is not None:
        estimator.scale = posterior_alpha(estimator, args.validation, args.forces_key)
        fitted = f", alpha {estimator.scale:.4g} eV fitted on {args.validation}"
    estimator.save(args.output)
    print(f"wrote {args.output}: {estimator.features.dim} last-layer features, "
          f"{estimator.n_structures} structures, regularizer {estimator.regularizer:.3g}"
          f"{fitted}")
    return 0


def _log_errors(args) -> int:
    from ..estimators.ltau import log_training_errors

    errors = log_training_errors(args.model, args.checkpoints, args.structures, args.output,
                                 forces_key=args.forces_key)
    print(f"wrote {args.output}: {errors.shape[0]} epochs x {errors.shape[1]} atoms, final "
          f"mean error {errors[-1].mean():.4g} eV/A")
    return 0


def _fit_ltau(args) -> int:
    from ..estimators.ltau import LTAU

    estimator = LTAU.fit(args.model, args.structures, args.errors, k=args.neighbours,
                         bins=args.bins, error_max=args.error_max, index=args.index,
                         ood_quantile=args.ood_quantile, first_epoch=args.first_epoch)
    estimator.save(args.output)
    cutoffs = ", ".join(f"{z}: {c:.3g}" for z, c in estimator.ood_cutoffs.items())
    print(f"wrote {args.output}: {estimator.n_epochs} epochs, {len(estimator.bin_edges) - 1} "
          f"bins up to {estimator.bin_edges[-1]:.3g} eV/A, k = {estimator.k}, out-of-domain "
          f"latent distance by atomic number {{{cutoffs}}}")
    return 0


def _fit_gmm(args) -> int:
    from ..estimators.gmm import LatentGMM

    estimator = LatentGMM.fit(args.model, args.structures, n_components=args.components,
                              max_components=args.max_components, seed=args.seed)
    estimator.save(args.output)
    print(f"wrote {args.output}: Gaussians by atomic number {estimator.n_components}")
    return 0
