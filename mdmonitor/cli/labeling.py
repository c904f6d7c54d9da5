"""`mdmonitor label`: relax and label the boxes of a candidate queue, in this process or on the
workers of a Dask cluster."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import options
from .monitoring import COUNT, EVERY, POSITIVE

DASK_LOG = "labeling.log"  # in the queue: what Dask logs, unless `mdmonitor --debug label`
EXIT_BOXES_FAILED = 3  # exit status of `label` when a box went to failed/ in this run
EXIT_STATUS = (f"Exit status: 0 when every box taken was labeled (or none was pending); "
               f"{EXIT_BOXES_FAILED} when a box went to QUEUE/failed/ in this run (its reason "
               "is printed and in the box); 1 for an error, 2 for an option out of range, 130 "
               "for Ctrl-C (not with --watch, where Ctrl-C is the normal end). Dask's own log "
               "goes to QUEUE/labeling.log (to the terminal with `mdmonitor --debug label`).")


def add_commands(commands) -> None:
    """Add this group's commands to the `mdmonitor` subparsers `commands`."""
    label = commands.add_parser(
        "label", help="relax and label the boxes of a candidate queue with a reference",
        description="Takes the pending boxes of QUEUE (written by an Extractor during MD), "
                    "relaxes the buffer of any not yet relaxed (with the model recorded in the "
                    "box, or --model), evaluates energy, forces and stress with the reference "
                    "calculator, appends them to QUEUE/labeled.extxyz (REF_energy, REF_forces, "
                    "REF_stress: ready for MACE training) and moves the box to QUEUE/done/; "
                    "boxes failing a quality gate, or the reference --retries times over, go "
                    "to QUEUE/failed/ with the reason. Any number of labelers may work one "
                    "queue (each claims its boxes); safe to kill and run again.",
        epilog=EXIT_STATUS)
    label.add_argument("queue", type=Path, help="queue directory (with pending/)")
    options.add_reference_options(label, required=True)
    label.add_argument("--model", nargs="+", metavar="MODEL",
                       help="MACE model file(s) to relax buffers with, instead of those "
                            "recorded in the boxes")
    where = label.add_argument_group(
        "where the calculations run (default: in this process, one box at a time)")
    where.add_argument("--workers", type=EVERY, metavar="N",
                       help="label on a Dask LocalCluster of N worker processes, N boxes at "
                            "a time (N x T at most the cores of this machine, and each worker "
                            "needs about 1 GB of free memory)")
    where.add_argument("--threads-per-worker", type=EVERY, default=1, metavar="T",
                       help="threads each calculation may use (OMP_NUM_THREADS of a worker; "
                            "for references that thread; default 1)")
    where.add_argument("--scheduler", metavar="ADDRESS",
                       help="label on the workers of a running Dask scheduler instead, e.g. "
                            "tcp://node17:8786 or one started by dask-jobqueue (the workers "
                            "must see QUEUE at the same path)")
    label.add_argument("--timeout", type=POSITIVE, metavar="SECONDS",
                       help="give up a calculation after SECONDS (its worker is restarted) "
                            "and retry the box; needs --workers or --scheduler")
    label.add_argument("--retries", type=COUNT, default=2,
                       help="how often a box whose calculation raised, died or timed out is "
                            "tried again before it goes to failed/ (default 2)")
    label.add_argument("--release-host", metavar="HOST",
                       help="first release the claims of labelers on HOST, known to be gone "
                            "(claims of this host's dead labelers are taken over anyway)")
    label.add_argument("--watch", action="store_true",
                       help="keep polling for new boxes (e.g. beside a running MD) until Ctrl-C")
    label.add_argument("--poll", type=POSITIVE, default=2.0,
                       help="seconds between polls with --watch (default 2)")
    label.add_argument("--until", type=Path, metavar="FILE",
                       help="with --watch: once FILE exists, label what is pending and exit "
                            "(`touch FILE` when the MD run that writes the boxes has ended)")
    follow = label.add_argument_group(
        "calibration that follows the run",
        "refit a calibration file on the labeled boxes after each batch, for a monitor given "
        "that file (`mdmonitor md --calibration FILE`, `mdmonitor lammps --calibration FILE`) to "
        "read again at its next monitored step")
    follow.add_argument("--calibrate", type=Path, metavar="FILE",
                        help="calibration JSON to (re)write atomically after each batch of "
                             "labels, once two boxes are labeled")
    follow.add_argument("--committee", nargs="+", metavar="MODEL",
                        help="the estimator it is fitted for: a committee of these MACE model "
                             "files (default: the models recorded in the boxes, which the MD "
                             "cut them with; each must still have the recorded SHA-256)")
    for kind in ("llpr", "ltau", "gmm"):
        follow.add_argument(f"--{kind}", metavar="FILE",
                            help=f"the estimator is the {kind.upper()} of this file (from "
                                 f"`mdmonitor fit-{kind}`), with the model it was fitted for, or "
                                 "--model")
    options.add_drive_option(follow, "the calibration then holds for `md --drive` alike")
    options.add_cutoff_option(follow)
    follow.add_argument("--form", default="alpha",
                        choices=("alpha", "auto", "element-alpha", "power", "element-power"),
                        help="the map (default alpha, one factor: steady on few boxes; see "
                             "`mdmonitor calibrate --help`)")
    follow.add_argument("--window", type=EVERY, metavar="N",
                        help="fit on the last N labeled boxes only (default: all so far), so "
                             "that the map follows a run whose errors drift")
    label.add_argument("--no-progress", action="store_true",
                       help="no progress bar (as beside LAMMPS's output in `mdmonitor lammps "
                            "--label`)")

    label.set_defaults(run=_label)


def _label(args) -> int:
    from tqdm.auto import tqdm

    from ..labeling.labeler import Labeler
    from ..labeling.reference import Reference, parse_parameters
    from . import debugging

    if not args.queue.is_dir():
        raise FileNotFoundError(f"queue directory '{args.queue}' does not exist")
    if args.until is not None and not args.watch:
        raise ValueError("--until FILE ends a labeler that watches the queue: give --watch too")
    reference = Reference(args.reference, parse_parameters(args.parameter))
    reference.check()
    say = lambda line: tqdm.write(line, file=sys.stderr)  # noqa: E731
    labeler = Labeler(args.queue, reference, args.model, workers=args.workers,
                      threads_per_worker=args.threads_per_worker, scheduler=args.scheduler,
                      retries=args.retries, timeout=args.timeout,
                      dask_log=None if debugging(args) else args.queue / DASK_LOG,
                      say=say)
    labeler.on_labeled = _refitting(args, labeler.queue.dataset, say)
    if args.release_host:
        released = labeler.claims.release_host(args.release_host)
        print(f"released {len(released)} claims of {args.release_host}")
    interrupted, watched = None, "; stopped watching"
    try:
        labeler.run(watch=args.watch, poll=args.poll, progress=not args.no_progress,
                    until=args.until)
        if args.until is not None:
            watched += f": {args.until} exists"
    except KeyboardInterrupt as stop:  # with --watch, Ctrl-C is how the labeler is stopped
        interrupted = None if args.watch else stop
    summary = labeler.summary
    print(f"labeled {len(summary.labeled)} boxes into {labeler.queue.dataset} in "
          f"{summary.startup_seconds + summary.seconds:.1f} s{_startup(args, summary)}; "
          f"{len(summary.failed)} failed; {len(summary.retried)} retried"
          + (watched if args.watch else ""))
    for name, holder in summary.taken_over.items():
        print(f"  {name}: took over the claim of {holder}, no longer running")
    for name, reason in summary.failed.items():
        print(f"  failed/{name}: {reason}")
    if interrupted is not None:
        print("run again to label the boxes still pending", file=sys.stderr)
        raise interrupted
    return EXIT_BOXES_FAILED if summary.failed else 0


def _refitting(args, dataset: Path, say):
    """What refits --calibrate on `dataset` after each batch of labels (None without it): says
    what it wrote, or why it did not (the labeler goes on, the file as it was)."""
    given = [kind for kind in options.ESTIMATOR_OPTIONS if getattr(args, kind)]
    if args.calibrate is None:
        if given or args.window or args.drive is not None:
            raise ValueError("--committee, --llpr, --ltau, --gmm, --drive and --window choose "
                             "how --calibrate FILE is refitted: give --calibrate")
        return None
    if len(given) > 1:
        raise ValueError(f"give one estimator for --calibrate, not "
                         f"{' and '.join('--' + kind for kind in given)}")
    from ..labeling.refit import CalibrationRefit

    if given and given[0] != "committee" and args.model and len(args.model) > 1:
        raise ValueError(f"--{given[0]} has one model: give one --model (or none)")
    if given:  # (--model of a single-model estimator: the one buffers are relaxed with)
        estimator = options.estimator_from(argparse.Namespace(
            **{**vars(args), "model": args.model[0] if args.model else None}))
    elif args.drive is not None:
        raise ValueError("--drive needs --committee MODEL ...: the committee it drives")
    else:
        estimator = None
    refit = CalibrationRefit(args.calibrate, estimator, args.cutoff, args.form, args.window)

    def after_batch(names: list[str]) -> None:
        try:
            calibration = refit.update(dataset)
        except (OSError, ValueError) as err:
            say(f"{args.calibrate} not refitted after {', '.join(names)}: {err}")
            return
        if calibration is not None:
            say(f"{args.calibrate}: calibration {calibration.digest}, {calibration.form} map, "
                f"alpha {calibration.alpha:.4g} from {calibration.n_frames} boxes "
                f"(mean local force error {calibration.mean_error:.4f} eV/A)")

    return after_batch


def _startup(args, summary) -> str:
    """What of the time was spent starting the Dask workers (or reaching the scheduler)."""
    if args.workers:
        return (f" (of which {summary.startup_seconds:.1f} s starting {args.workers} "
                f"worker{'s' if args.workers > 1 else ''})")
    if args.scheduler:
        return f" (of which {summary.startup_seconds:.1f} s reaching the scheduler's workers)"
    return ""
