"""`mdmonitor adversarial`: adversarial sampling of structures the model is unsure of."""

from __future__ import annotations

import math
from pathlib import Path

from .monitoring import COUNT, EVERY, NON_NEGATIVE, POSITIVE
from .options import add_cutoff_option, estimator_from

BOXES = ("whole", "cube", "embed", "cluster")


def add_commands(commands) -> None:
    """Add this group's commands to the `mdmonitor` subparsers `commands`."""
    adversarial = commands.add_parser(
        "adversarial", help="displace structures towards high uncertainty, queue them",
        description="Gradient ascent on the displacement of the atoms of each start structure "
                    "to maximise p U (Tan et al. 2023, Eqs. 15-16; Schwalbe-Koda et al. 2021): "
                    "U the mean per-atom uncertainty (committee force variance, LLPR variance "
                    "or GMM negative log-likelihood), p the Boltzmann factor exp(-e/kT) of the "
                    "predicted energy per atom e, normalised by the training set (or the start "
                    "structure). Each result goes to the candidate queue whole, or as a box cut "
                    "around its most uncertain region, for `mdmonitor label`.")
    adversarial.add_argument("structures", type=Path,
                             help="start structures, any file ASE reads; every frame is a start")
    source = adversarial.add_mutually_exclusive_group(required=True)
    source.add_argument("--committee", nargs="+", metavar="MODEL",
                        help="two or more MACE model files: U = force variance (eV^2/A^2)")
    source.add_argument("--llpr", metavar="FILE",
                        help="LLPR file from `mdmonitor fit-llpr`: U = scale^2 / LPR")
    source.add_argument("--gmm", metavar="FILE",
                        help="GMM file from `mdmonitor fit-gmm`: U = NLL above the training "
                             "floor (nats)")
    adversarial.add_argument("--model", help="with --llpr or --gmm: the MACE model, if not "
                                             "where it was fitted")
    adversarial.set_defaults(ltau=None)  # (estimator_from asks for every estimator option)
    adversarial.add_argument("-n", "--iterations", type=EVERY, default=20,
                             help="gradient-ascent steps per sample, at least 1 (default 20)")
    adversarial.add_argument("--kT", type=POSITIVE, default=0.03,
                             help="temperature of p in eV per atom (default 0.03, the paper's "
                                  "0.7 kcal/mol/atom)")
    adversarial.add_argument("--step", type=POSITIVE, default=0.02,
                             help="largest displacement of any atom in one step, A (default "
                                  "0.02); a refused step is halved, at most 6 times")
    adversarial.add_argument("--energy-cap", type=POSITIVE, default=1.0,
                             help="eV: no step may raise the predicted energy more than this "
                                  "above the start's (default 1.0)")
    adversarial.add_argument("--noise", type=NON_NEGATIVE, default=0.01,
                             help="Gaussian start displacement, A (default 0.01)")
    adversarial.add_argument("--samples", type=EVERY, default=1,
                             help="samples per start structure, each from its own start noise "
                                  "(default 1)")
    adversarial.add_argument("--seed", type=COUNT, default=0, help="seed of the start noise")
    adversarial.add_argument("--training-set", type=Path, default=None,
                             help="labelled training structures (REF_energy) normalising p as "
                                  "in Eq. 16; default: the start structure, where p = 1")
    out = adversarial.add_argument_group("queue", "where the adversarial structures go")
    out.add_argument("--queue", type=Path, default=Path("candidates"),
                     help="queue directory (default ./candidates)")
    out.add_argument("--box", choices=BOXES, default="whole",
                     help="queue the whole structure (default), or cut a box around the atom of "
                          "largest local U with the extractor's cube, embed or cluster")
    add_cutoff_option(out)
    out.add_argument("--core-radius", type=POSITIVE, default=4.0,
                     help="atoms within this radius (A) of the centre are kept exactly")
    out.add_argument("--box-length", type=POSITIVE, default=None,
                     help="cube edge / cluster diameter in A (cube default: 12)")
    out.add_argument("--relax", choices=("inline", "label"), default="inline",
                     help="relax cube borders now, or leave it to `mdmonitor label`")
    out.add_argument("--run-id", default="adversarial",
                     help="first part of the box names (default adversarial)")
    adversarial.set_defaults(run=_adversarial)


def _adversarial(args) -> int:
    from ..common.freed_memory import keep_freed_memory
    from ..common.structures import load_structures
    from ..extraction.candidates import CandidateQueue, box_name
    from ..extraction.extractor import Extractor
    from ..sampling.adversarial import AdversarialSampler, queue_sample

    box_name(args.run_id, 0, 0)  # a bad run id is refused before any work
    starts = load_structures(args.structures)
    estimator = estimator_from(args)
    keep_freed_memory()  # this process is ours: malloc keeps the ascent's tensors
    sampler = AdversarialSampler(estimator, kT=args.kT, step=args.step,
                                 iterations=args.iterations, energy_cap=args.energy_cap,
                                 noise=args.noise, seed=args.seed, training_set=args.training_set)
    extractor = None
    if args.box != "whole":
        box_length = args.box_length or (12.0 if args.box == "cube" else None)
        extractor = Extractor(args.box, queue=args.queue, core_radius=args.core_radius,
                              box_length=box_length, relax=args.relax, run_id=args.run_id,
                              seed=args.seed)
    queue = CandidateQueue(args.queue)
    unit = sampler.uncertainty.unit
    written = 0
    for frame, atoms in enumerate(starts):
        for sample in range(args.samples):
            result = sampler.sample(atoms, sample, progress=True)
            first, last = result.history[0], result.history[-1]
            name = queue_sample(result, args.queue, estimator, frame, sample, extractor,
                                args.cutoff, args.run_id)
            written += name is not None
            where = (f"written to {queue.stage_of(name)}/{name}" if name
                     else "already in the queue")
            print(f"frame {frame} sample {sample}: U {first.uncertainty:.4g} -> "
                  f"{last.uncertainty:.4g} {unit} in {last.iteration} steps, energy "
                  f"{last.energy_above_start:+.3f} eV above the start, p "
                  f"{math.exp(last.log_probability):.3g} ({result.stop_reason}); {where}")
    print(f"{written} new structures in {args.queue}; label them with "
          f"`mdmonitor label {args.queue} --reference MODULE:CLASS`")
    return 0
