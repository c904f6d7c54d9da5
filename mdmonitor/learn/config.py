"""The settings of an active-learning run, read from one TOML file and checked before any compute.

Every key, its unit and its default is listed in `SCHEMA` (and in the README). Paths are relative
to the TOML file; the word "bundled" names the bundled Cu models and training set.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from ..bundled_models import demo_models
from ..common.settings import non_negative_integer, positive_integer, positive_number
from ..common.structures import load_structures
from ..extraction.extractor import centre_numbers
from ..extraction.host_embedding import HOST_STRUCTURES
from ..labeling.labeler import DEFAULT_RETRIES
from ..labeling.reference import reference_calculator
from ..labeling.workers import check_pool_settings

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ENGINES = ("ase", "lammps")
ESTIMATORS = ("committee", "llpr", "llpr-forces", "ltau", "gmm")
TRAINING_MODES = ("finetune", "scratch")
BOXES = ("cube", "host")  # the Extractor strategies the box selections cut with
# the selection strategies (mdmonitor.learning.selection) by name
SELECTIONS = ("uncertainty", "random", "whole-frame", "pr-guided")
FRAME_SOURCES = ("threshold", "segments")

# section -> key -> (default, meaning); a default of None means "not set"
SCHEMA = {
    "run": {
        "directory": ("run", "run directory, relative to this file"),
        "generations": (5, "at most this many generations"),
        "seed": (0, "seed of MD velocities, selections, hold-out and training"),
    },
    "models": {
        "committee": ("bundled", "MACE model files of generation 0 (a list), or \"bundled\""),
        "estimator": ("committee", "committee, llpr, llpr-forces (the LLPR's posterior force "
                                   "spread, 4 samples), ltau or gmm (single-model "
                                   "estimators use, and train, the first model only)"),
        "training_set": ("bundled", "extxyz with REF_energy/REF_forces(/REF_stress), or "
                                    "\"bundled\""),
        "validation_set": (None, "extxyz of the initial kind for validation: each generation "
                                 "validates on its held-out labels plus as many of these "
                                 "(default: frames drawn from the training set; \"bundled\" "
                                 "for the bundled one)"),
        "calibration": (None, "calibration JSON of the generation-0 estimator, any map form "
                              "(optional)"),
    },
    "md": {
        "start": (None, "start structure file (required); its frames are used in turn, one "
                        "per generation"),
        "engine": ("ase", "ase or lammps"),
        "ranks": (1, "MPI ranks of the lammps engine (mpirun -np)"),
        "steps": (200, "MD steps per generation"),
        "temperature": (600.0, "Langevin temperature, K"),
        "timestep": (2.0, "fs"),
        "friction": (0.01, "Langevin friction, 1/fs (lammps: damping time 1/friction)"),
        "interval": (5, "monitor every N steps"),
        "frame_interval": (10, "write md.extxyz every N steps"),
        "cutoff": (4.0, "aggregation radius, A"),
        "threshold": (None, "local uncertainty that triggers a selection (required, but for "
                            "selection.frames = \"segments\")"),
        "error_threshold": (None, "the same as an expected local force error (eV/A), used "
                                  "once a generation has a calibration (any map form: alpha "
                                  "divides it, the others convert it per element)"),
        "stop_threshold": (None, "stop the MD above this local uncertainty (optional)"),
    },
    "selection": {
        "strategy": ("uncertainty", "uncertainty, random, whole-frame or pr-guided"),
        "frames": ("threshold", "where boxes come from: threshold (cut while the MD runs, when "
                                "md.threshold is crossed; random: random frames) or segments "
                                "(after the MD, one box from each of `boxes` equal segments of "
                                "the first `span` of the trajectory: around the most uncertain "
                                "centre of the segment, or a random centre of a random frame; "
                                "Heid et al. 2024, Methods B)"),
        "span": (0.5, "segments: the fraction of the MD the boxes are drawn from; [test] boxes "
                      "come from the rest"),
        "centres": (None, "elements box centres are chosen from, e.g. [\"O\"] (default: any)"),
        "molecules": (False, "cubes take whole molecules: heavy atoms with their bonded "
                             "hydrogens, X-H bonds held while the border relaxes"),
        "box_fraction": (None, "a cube of this fraction of the frame's volume and atoms (with "
                               "molecules: heavy atoms), instead of box_length (Heid: 0.5)"),
        "boxes": (4, "boxes per generation (whole-frame: frames per generation)"),
        "box": ("cube", "box the box strategies cut: cube (Heid et al., border relaxed) or "
                        "host (the environment in a host crystal, Chong et al. Sec. 4.2)"),
        "box_length": (10.0, "cube edge, A"),
        "host": ("fcc", "box = host: the host crystal (fcc, bcc, hcp, diamond or sc) of the "
                        "environment's most common element"),
        "samples": (1, "box = host: copies per centre with the host's buffer displaced by "
                       "0.2 A noise, counted in boxes"),
        "core_radius": (4.0, "atoms kept exactly, A"),
        "max_per_frame": (1, "boxes per triggered frame"),
        "cooldown": (50, "steps before a region is cut again"),
        "pool": (None, "pr-guided: candidate boxes cut during the MD, of which `boxes` are "
                       "kept (default 3 x boxes)"),
        "rigidity_limit": (None, "pr-guided: keep fewer boxes once the LPR of the triggering "
                                 "centres reaches this (dimensionless, optional)"),
    },
    "reference": {
        "calculator": ("ase.calculators.emt:EMT", "ASE calculator as module:Class"),
        "parameters": ({}, "keyword arguments of the calculator"),
    },
    "labeling": {  # (as `mdmonitor label --workers ...`; the cluster serves every generation)
        "workers": (None, "label on a Dask LocalCluster of N worker processes, N boxes at a "
                          "time (default: in this process, one box at a time)"),
        "threads_per_worker": (1, "threads each calculation may use (OMP_NUM_THREADS of a "
                                  "worker)"),
        "scheduler": (None, "label on the workers of a running Dask scheduler instead, e.g. "
                            "\"tcp://login1:8786\" (they must see the run directory at the "
                            "same path)"),
        "timeout": (None, "give up a calculation after this many seconds (its worker is "
                          "restarted) and retry the box; needs workers or scheduler"),
        "retries": (DEFAULT_RETRIES, "how often a box whose calculation raised, died or timed "
                                     "out is tried again before it goes to failed/"),
    },
    "training": {
        "mode": ("finetune", "finetune (from the current weights) or scratch (new "
                             "weights, same architecture)"),
        "epochs": (40, "mace_run_train --max_num_epochs"),
        "lr": (None, "learning rate (default 0.01)"),
        "batch_size": (4, "structures per batch"),
        "replay": (None, "initial training frames per labeled frame in a generation's training "
                         "set (at least 4 batches), drawn anew each generation, or \"all\" "
                         "(default 4 finetune, all scratch)"),
        "energy_weight": (1.0, "loss weight of energies (per atom, eV^-2)"),
        "forces_weight": (100.0, "loss weight of forces (eV/A)^-2"),
        "stress_weight": (1.0, "loss weight of stresses"),
        "holdout": (0.2, "fraction of each generation's labels kept out of training, for "
                         "validation and calibration (at least one frame of two or more)"),
        "extra_args": ([], "further mace_run_train arguments, e.g. [\"--ema\"]"),
    },
    "calibration": {
        "window": (None, "fit each generation's calibration (alpha, on held-out labels) on the "
                         "most recent N of them, at least 2 (default: every generation's so "
                         "far), so that it follows a run whose errors drift"),
    },
    "test": {
        "file": (None, "EMT/DFT-labelled frames to report the force MAE and Spearman on"),
        "boxes": (0, "boxes per generation cut by the selection from the rest of the MD (after "
                     "selection.span), labeled and kept out of training: a test set grown per "
                     "generation (needs selection.frames = \"segments\")"),
    },
}


@dataclass
class LearningConfig:
    """Checked settings of a run: `path` the TOML file, `sections` the values by section/key."""

    path: Path
    sections: dict

    def __getitem__(self, section: str) -> dict:
        return self.sections[section]

    @property
    def directory(self) -> Path:
        return self.path.parent / self["run"]["directory"]

    def model_files(self) -> list[Path]:
        committee = self["models"]["committee"]
        return ([Path(p) for p in demo_models()["committee"]] if committee == "bundled"
                else [self._file(p, "models.committee") for p in committee])

    def training_set(self) -> Path:
        return self._data("training_set")

    def validation_set(self) -> Path | None:
        return self._data("validation_set")

    def _data(self, key: str) -> Path | None:
        value = self["models"][key]
        if value is None:
            return None
        return Path(demo_models()[key]) if value == "bundled" else self._file(value,
                                                                               f"models.{key}")

    def _file(self, value, key: str) -> Path:
        path = self.path.parent / str(value)
        if not path.is_file():
            raise FileNotFoundError(f"{self.path}: {key} = '{value}': no such file ({path})")
        return path

    def file(self, section: str, key: str) -> Path | None:
        value = self[section][key]
        return None if value is None else self._file(value, f"{section}.{key}")


def load_config(path: str | Path, generations: int | None = None) -> LearningConfig:
    """Read and check the TOML file at `path`; ValueError/FileNotFoundError naming the key."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file '{path}' does not exist")
    try:
        raw = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid TOML: {err}") from err
    unknown = [s for s in raw if s not in SCHEMA]
    if unknown:
        raise ValueError(f"{path}: unknown section(s) {', '.join(map(repr, unknown))}; "
                         f"known: {', '.join(SCHEMA)}")
    sections = {}
    for section, keys in SCHEMA.items():
        given = raw.get(section, {})
        if not isinstance(given, dict):
            raise ValueError(f"{path}: [{section}] must be a table")
        bad = [k for k in given if k not in keys]
        if bad:
            raise ValueError(f"{path}: unknown key(s) {', '.join(f'{section}.{k}' for k in bad)}"
                             f"; [{section}] knows {', '.join(keys)}")
        sections[section] = {k: given.get(k, default) for k, (default, _) in keys.items()}
    if generations is not None:
        sections["run"]["generations"] = generations
    config = LearningConfig(path.resolve(), sections)
    _check(config)
    return config


def _check(config: LearningConfig) -> None:
    """Every value in range, every file present, the reference importable."""
    where = str(config.path)

    def named(section, key):
        return f"{where}: {section}.{key}"

    run, models, md = config["run"], config["models"], config["md"]
    selection, training = config["selection"], config["training"]
    positive_integer(named("run", "generations"), run["generations"])
    _choice(named("models", "estimator"), models["estimator"], ESTIMATORS)
    _choice(named("md", "engine"), md["engine"], ENGINES)
    _choice(named("selection", "strategy"), selection["strategy"], SELECTIONS)
    _choice(named("selection", "box"), selection["box"], BOXES)
    _choice(named("selection", "frames"), selection["frames"], FRAME_SOURCES)
    _choice(named("selection", "host"), selection["host"], HOST_STRUCTURES)
    _choice(named("training", "mode"), training["mode"], TRAINING_MODES)
    for key in ("ranks", "steps", "interval", "frame_interval"):
        positive_integer(named("md", key), md[key])
    for key in ("boxes", "max_per_frame", "cooldown", "samples"):
        positive_integer(named("selection", key), selection[key])
    for key in ("epochs", "batch_size"):
        positive_integer(named("training", key), training[key])
    for key in ("temperature", "timestep", "friction", "cutoff"):
        positive_number(named("md", key), md[key])
    segments = selection["frames"] == "segments"
    positive_number(named("md", "threshold"), md["threshold"], allow_none=segments)
    _check_boxes(config, named)
    for key in ("error_threshold", "stop_threshold"):
        positive_number(named("md", key), md[key], allow_none=True)
    for key in ("box_length", "core_radius"):
        positive_number(named("selection", key), selection[key])
    positive_integer(named("selection", "pool"), selection["pool"], allow_none=True)
    positive_number(named("selection", "rigidity_limit"), selection["rigidity_limit"],
                    allow_none=True)
    if selection["pool"] is not None and selection["pool"] < selection["boxes"]:
        raise ValueError(f"{named('selection', 'pool')} = {selection['pool']} is smaller than "
                         f"selection.boxes = {selection['boxes']}: the pool is what they are "
                         "chosen from")
    if selection["strategy"] == "pr-guided" and md["engine"] != "ase":
        raise ValueError(f"{named('selection', 'strategy')} = 'pr-guided' cuts its pool of "
                         "boxes with the ASE engine's extractor; use md.engine = 'ase'")
    for key in ("lr", "energy_weight", "forces_weight", "stress_weight"):
        positive_number(named("training", key), training[key], allow_none=True)
    if training["replay"] != "all":
        positive_number(named("training", "replay"), training["replay"], allow_none=True,
                        meaning='number of frames per labeled frame, or "all"')
    if not 0 <= training["holdout"] < 1:
        raise ValueError(f"{named('training', 'holdout')} must be in [0, 1), got "
                         f"{training['holdout']!r}")
    if md["engine"] == "lammps" and models["estimator"] not in ("committee", "llpr"):
        raise ValueError(f"{named('md', 'engine')} = 'lammps' runs the committee or llpr "
                         f"estimator (the ones LAMMPS's pair style hosts), not "
                         f"{models['estimator']!r}")
    if selection["box"] == "host" and md["engine"] != "ase":
        raise ValueError(f"{named('selection', 'box')} = 'host' is cut by the ASE engine's "
                         "extractor (the LAMMPS fix cuts cubes); use md.engine = 'ase'")
    if selection["samples"] > 1 and selection["box"] != "host":
        raise ValueError(f"{named('selection', 'samples')} = {selection['samples']} needs "
                         "selection.box = 'host' (cubes are relaxed, not copied with noise)")
    if md["frame_interval"] % md["interval"]:
        raise ValueError(f"{named('md', 'frame_interval')} = {md['frame_interval']} must be a "
                         f"multiple of md.interval = {md['interval']}: the selections read the "
                         "local uncertainty of the frames in md.extxyz")
    if md["ranks"] > 1 and md["engine"] != "lammps":
        raise ValueError(f"{named('md', 'ranks')} = {md['ranks']} needs engine = 'lammps'")
    if not isinstance(training["extra_args"], list):
        raise ValueError(f"{named('training', 'extra_args')} must be a list of strings")
    if md["start"] is None:
        raise ValueError(f"{named('md', 'start')} is required: a structure file")
    try:  # (an empty or unreadable start file is a config error, before any compute)
        load_structures(config.file("md", "start"))
    except ValueError as err:
        raise ValueError(f"{named('md', 'start')}: {err}") from None
    config.model_files()
    config.training_set()
    config.validation_set()
    config.file("models", "calibration")
    config.file("test", "file")
    if models["committee"] != "bundled" and not isinstance(models["committee"], list):
        raise ValueError(f"{named('models', 'committee')} must be a list of model files or "
                         "\"bundled\"")
    if models["estimator"] == "committee" and len(config.model_files()) < 2:
        raise ValueError(f"{named('models', 'committee')}: a committee needs two or more models")
    reference_calculator(config["reference"]["calculator"], config["reference"]["parameters"])
    _check_labeling(config)
    window = positive_integer(named("calibration", "window"), config["calibration"]["window"],
                              allow_none=True)
    if window == 1:
        raise ValueError(f"{named('calibration', 'window')} must be 2 or more: a calibration is "
                         "fitted on two frames at least")


def _check_boxes(config: LearningConfig, named) -> None:
    """The keys that shape and place boxes: frames, span, centres, molecules, box_fraction and
    test.boxes, and which strategies and engines cut them."""
    selection, md, test = config["selection"], config["md"], config["test"]
    segments = selection["frames"] == "segments"
    if segments and selection["strategy"] not in ("uncertainty", "random"):
        raise ValueError(f"{named('selection', 'frames')} = 'segments' is a way to choose boxes "
                         "of the uncertainty and random strategies, not of "
                         f"{selection['strategy']!r}")
    if not 0 < selection["span"] <= 1:
        raise ValueError(f"{named('selection', 'span')} must be in (0, 1], got "
                         f"{selection['span']!r}")
    non_negative_integer(named("test", "boxes"), test["boxes"])
    if test["boxes"] and not segments:
        raise ValueError(f"{named('test', 'boxes')} = {test['boxes']} cuts test boxes from the "
                         "segments after selection.span: set selection.frames = 'segments'")
    if test["boxes"] and selection["span"] == 1:
        raise ValueError(f"{named('test', 'boxes')} = {test['boxes']} needs the part of the MD "
                         "after selection.span: set selection.span below 1")
    centre_numbers(selection["centres"], named("selection", "centres"))
    if not isinstance(selection["molecules"], bool):
        raise ValueError(f"{named('selection', 'molecules')} must be true or false, got "
                         f"{selection['molecules']!r}")
    fraction = selection["box_fraction"]
    if fraction is not None and not (isinstance(fraction, (int, float)) and 0 < fraction < 1):
        raise ValueError(f"{named('selection', 'box_fraction')} must be in (0, 1), got "
                         f"{fraction!r}")
    shaped = [k for k in ("centres", "box_fraction") if selection[k] is not None]
    shaped += ["molecules"] if selection["molecules"] else []
    if shaped and selection["box"] != "cube":
        raise ValueError(f"{named('selection', shaped[0])} shapes cubes: use selection.box = "
                         "'cube'")
    if shaped and md["engine"] == "lammps" and not segments \
            and selection["strategy"] == "uncertainty":
        raise ValueError(f"{named('selection', shaped[0])}: the LAMMPS fix cuts plain cubes "
                         "while the MD runs; use selection.frames = 'segments' (boxes cut "
                         "after the MD) or md.engine = 'ase'")


def _check_labeling(config: LearningConfig) -> None:
    """The [labeling] keys, by the rules `mdmonitor label` checks its options with."""
    labeling = config["labeling"]

    def named(key):
        return f"{config.path}: labeling.{key}"

    positive_integer(named("workers"), labeling["workers"], allow_none=True)
    positive_integer(named("threads_per_worker"), labeling["threads_per_worker"])
    positive_number(named("timeout"), labeling["timeout"], allow_none=True)
    non_negative_integer(named("retries"), labeling["retries"])
    if labeling["scheduler"] is not None and not isinstance(labeling["scheduler"], str):
        raise ValueError(f"{named('scheduler')} must be an address such as "
                         f"\"tcp://login1:8786\", got {labeling['scheduler']!r}")
    try:
        check_pool_settings(labeling["workers"], labeling["threads_per_worker"],
                            labeling["scheduler"], labeling["timeout"])
    except ValueError as err:
        raise ValueError(f"{config.path}: [labeling] {err}") from err


def _choice(name: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"{name} = {value!r} is not one of {', '.join(choices)}")
