"""`mdmonitor label`: relax and label the boxes of a candidate queue."""

from __future__ import annotations

import sys
from pathlib import Path

from . import options


def add_commands(commands) -> None:
    """Add this group's commands to the `mdmonitor` subparsers `commands`."""
    label = commands.add_parser(
        "label", help="relax and label the boxes of a candidate queue with a reference",
        description="Takes the pending boxes of QUEUE (written by an Extractor during MD), "
                    "relaxes the buffer of any not yet relaxed (with the model recorded in the "
                    "box, or --model), evaluates energy, forces and stress with the reference "
                    "calculator, appends them to QUEUE/labeled.extxyz (REF_energy, REF_forces, "
                    "REF_stress: ready for MACE training) and moves the box to QUEUE/done/; "
                    "boxes failing a quality gate go to QUEUE/failed/ with the reason. Safe to "
                    "interrupt and run again.")
    label.add_argument("queue", type=Path, help="queue directory (with pending/)")
    options.add_reference_options(label, required=True)
    label.add_argument("--model", nargs="+", metavar="MODEL",
                       help="MACE model file(s) to relax buffers with, instead of those "
                            "recorded in the boxes")
    label.add_argument("--watch", action="store_true",
                       help="keep polling for new boxes (e.g. beside a running MD) until Ctrl-C")
    label.add_argument("--poll", type=float, default=2.0,
                       help="seconds between polls with --watch (default 2)")
    label.add_argument("--no-progress", action="store_true",
                       help="no progress bar (as beside LAMMPS's output in `mdmonitor lammps "
                            "--label`)")

    label.set_defaults(run=_label)


def _label(args) -> int:
    from ..extraction.labeling import Labeler, parse_parameters, reference_calculator
    from ..extraction.relaxation import calculator_from_files

    reference = reference_calculator(args.reference, parse_parameters(args.parameter))
    relax_with = calculator_from_files(args.model) if args.model else None
    if not args.queue.is_dir():
        raise FileNotFoundError(f"queue directory '{args.queue}' does not exist")
    labeler = Labeler(args.queue, reference, relax_with, reference_name=args.reference)
    interrupted = None
    try:
        labeler.run(watch=args.watch, poll=args.poll, progress=not args.no_progress)
    except KeyboardInterrupt as stop:  # with --watch, Ctrl-C is how the labeler is stopped
        interrupted = None if args.watch else stop
    summary = labeler.summary
    print(f"labeled {len(summary.labeled)} boxes into {labeler.queue.dataset}; "
          f"{len(summary.failed)} failed" + ("; stopped watching" if args.watch else ""))
    for name, reason in summary.failed.items():
        print(f"  failed/{name}: {reason}")
    if interrupted is not None:
        print("run again to label the boxes still pending", file=sys.stderr)
        raise interrupted
    return 0
