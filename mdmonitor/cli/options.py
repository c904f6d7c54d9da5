"""Options shared by several commands: the estimator, the aggregation radius, labelled frames
and the reference calculator."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_cutoff_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cutoff", type=float, default=4.0,
                        help="aggregation radius in A: each atom's local uncertainty is the mean "
                             "over all atoms within it, itself included (default 4.0)")


def add_monitor_options(parser: argparse.ArgumentParser) -> None:
    add_cutoff_option(parser)
    parser.add_argument("--threshold", type=float, default=None,
                        help="local uncertainty above which a frame counts as triggered")


def add_estimator_options(parser: argparse.ArgumentParser, combine: bool = False) -> None:
    """--committee, --llpr, --ltau, --gmm: one of them, or with `combine` several, whose
    signals a calibration combines (the first given in that order drives)."""
    source = (parser.add_argument_group("estimator (one or several: their signals are combined "
                                        "by the calibration; the first of committee, llpr, "
                                        "ltau, gmm gives the forces)")
              if combine else parser.add_mutually_exclusive_group(required=True))
    source.add_argument("--committee", nargs="+", metavar="MODEL",
                        help="two or more MACE model files")
    source.add_argument("--llpr", metavar="FILE", help="LLPR file from `mdmonitor fit-llpr`")
    source.add_argument("--ltau", metavar="FILE", help="LTAU file from `mdmonitor fit-ltau`")
    source.add_argument("--gmm", metavar="FILE", help="GMM file from `mdmonitor fit-gmm`")
    parser.add_argument("--model", help="with --llpr, --ltau or --gmm: the MACE model, if not "
                                        "where it was fitted")


def drive(text: str):
    """--drive: "mean" (None), "member:K" (K, a member index) or a MACE model file (a Path)."""
    if text == "mean":
        return None
    if text.startswith("member:"):
        index = text.removeprefix("member:")
        if not index.isdigit():
            raise argparse.ArgumentTypeError(f"member:K needs a member index K = 0, 1, ..., not "
                                             f"'{index}'")
        return int(index)
    return Path(text)


def add_drive_option(parser: argparse.ArgumentParser, what_follows: str) -> None:
    parser.add_argument("--drive", type=drive, default=None, metavar="mean|member:K|MODEL",
                        help="with --committee, what drives the dynamics: the committee mean "
                             "(default), member K (from 0), or another MACE model file (same "
                             "elements and cutoff), whose energy and forces are then those of "
                             f"every step; {what_follows}")


def add_labeled_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("labeled", type=Path,
                        help="frames labelled with reference forces (DFT, EMT, ...), any file "
                             "ASE reads, e.g. extxyz with a REF_forces or forces column")
    add_estimator_options(parser, combine=True)
    add_drive_option(parser, "the force errors are then the driving model's, and a calibration "
                             "holds only for a committee with that driver (as `md --drive`)")
    add_cutoff_option(parser)
    add_forces_key_option(parser)


def add_forces_key_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--forces-key", metavar="KEY", default=None,
                        help="name of the reference forces in the file (default: REF_forces, "
                             "else the forces stored with each frame)")


def add_reference_options(parser: argparse.ArgumentParser, required: bool) -> None:
    parser.add_argument("--reference", required=required, metavar="MODULE:CLASS",
                        help="reference ASE calculator class, e.g. ase.calculators.emt:EMT"
                             + ("" if required else " (with --label)"))
    parser.add_argument("-p", "--parameter", action="append", default=[], metavar="KEY=VALUE",
                        help="keyword argument of the reference calculator (repeatable; values "
                             "are Python literals, e.g. -p xc='PBE' -p kpts=(2,2,2))")


ESTIMATOR_OPTIONS = ("committee", "llpr", "ltau", "gmm")


def estimator_from(args):
    """The estimator the --committee (with --drive), --llpr, --ltau or --gmm option names, or
    the `Combined` estimator of several of them (named by their options, the first drives)."""
    from ..estimators.combined import Combined
    from ..estimators.committee import Committee
    from ..estimators.fitted import load_fitted

    given = [kind for kind in ESTIMATOR_OPTIONS if getattr(args, kind, None)]
    if not given:
        raise SystemExit("error: give an estimator: --committee, --llpr, --ltau or --gmm")
    driver = getattr(args, "drive", None)
    if driver is not None and not args.committee:
        raise ValueError("--drive chooses what drives a committee's dynamics: give --committee "
                         "(--llpr, --ltau and --gmm are driven by their own model)")
    estimators = {kind: Committee.from_mace(args.committee, driver=driver) if kind == "committee"
                  else load_fitted(kind, getattr(args, kind), model=args.model)
                  for kind in given}
    return estimators[given[0]] if len(given) == 1 else Combined(estimators)
