"""`mdmonitor select`: keep the pending boxes of a queue that teach the model the most."""

from __future__ import annotations

from pathlib import Path

from .monitoring import EVERY, POSITIVE


def add_commands(commands) -> None:
    """Add this group's commands to the `mdmonitor` subparsers `commands`."""
    select = commands.add_parser(
        "select", help="PR-guided choice of the pending boxes worth labeling",
        description="Before any reference calculation: takes the centre atom of each pending "
                    "box of QUEUE as a target (the environments that triggered), then chooses "
                    "boxes one at a time, each time the box whose addition to the LLPR's "
                    "Gauss-Newton matrix raises the targets' LPR the most (Chong et al. 2024, "
                    "Sec. 4.1; no labels needed), until N are chosen or the targets' LPR "
                    "(harmonic mean over the targets) passes --limit. The chosen boxes stay "
                    "pending for `mdmonitor label`; the others move to QUEUE/skipped/ with the "
                    "reason in the manifest. For a committee run, give the LLPR of member 0. "
                    "Run it before `mdmonitor label` starts on the queue: it does not wait for "
                    "a labeler's claims.")
    select.add_argument("queue", type=Path, help="queue directory (with pending/)")
    select.add_argument("--llpr", required=True, metavar="FILE",
                        help="LLPR file of the run's model (`mdmonitor fit-llpr`)")
    select.add_argument("--model", help="the LLPR's MACE model, if not where it was fitted")
    select.add_argument("--n", type=EVERY, required=True, metavar="N",
                        help="at most this many boxes are kept")
    select.add_argument("--limit", type=POSITIVE, default=None, metavar="LPR",
                        help="stop choosing once the targets' LPR reaches this (dimensionless; "
                             "uncertainty = scale / sqrt(LPR))")
    select.set_defaults(run=_select)


def _select(args) -> int:
    from ..estimators.llpr import LastLayerLPR
    from ..extraction.pr_selection import select_pending

    if not (args.queue / "pending").is_dir():
        raise FileNotFoundError(f"'{args.queue}' is not a queue directory (no pending/)")
    llpr = LastLayerLPR.load(args.llpr, model=args.model)
    outcome = select_pending(args.queue, llpr, args.n, args.limit, progress=True)
    print(f"{outcome.targets} target environment(s); targets' LPR "
          f"{outcome.rigidity[0]:.6g} before any box")
    for rank, (name, rigidity) in enumerate(zip(outcome.chosen, outcome.rigidity[1:]), start=1):
        print(f"  {rank:3d}  {name}  targets' LPR {rigidity:.6g}")
    why = "the limit was reached" if outcome.reached_limit else f"--n {args.n}"
    print(f"kept {len(outcome.chosen)} box(es) pending ({why}); moved {len(outcome.skipped)} "
          f"to {args.queue / 'skipped'}")
    return 0
