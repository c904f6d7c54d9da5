"""The learn config: every key checked before any compute, with a message naming it."""

from pathlib import Path

import pytest

from mdmonitor.learn.config import SCHEMA, load_config

EXAMPLES = Path(__file__).parents[2] / "examples" / "learn"
START = "cu_slab_start.extxyz"


@pytest.fixture
def write(tmp_path):
    (tmp_path / START).write_text((EXAMPLES / START).read_text())

    def write(text):
        path = tmp_path / "run.toml"
        path.write_text(text)
        return path
    return write


MINIMAL = f'[md]\nstart = "{START}"\nthreshold = 0.04\n'


def test_a_minimal_config_takes_every_default(write):
    config = load_config(write(MINIMAL))
    for section, keys in SCHEMA.items():
        for key, (default, _) in keys.items():
            if (section, key) not in (("md", "start"), ("md", "threshold")):
                assert config[section][key] == default
    assert len(config.model_files()) == 4  # the bundled committee
    assert config.directory == config.path.parent / "run"


def test_the_example_config_is_valid():
    config = load_config(EXAMPLES / "cu_slab.toml", generations=1)
    assert config["run"]["generations"] == 1
    assert config["selection"]["strategy"] == "uncertainty"


@pytest.mark.parametrize("text, message", [
    ("[mdd]\n", "unknown section.*'mdd'"),
    ("[md]\nstart = 'x'\nthreshhold = 1\n", r"unknown key\(s\) md.threshhold"),
    ("[md]\nengine = 'gromacs'\n", "md.engine = 'gromacs' is not one of ase, lammps"),
    ("[selection]\nstrategy = 'best'\n", "selection.strategy = 'best' is not one of"),
    ("[models]\nestimator = 'ensemble'\n", "models.estimator = 'ensemble' is not one of"),
    ("[training]\nmode = 'transfer'\n", "training.mode = 'transfer' is not one of"),
    ("[md]\nsteps = -5\n", "md.steps must be a positive integer, got -5"),
    ("[md]\ntemperature = -300.0\n", "md.temperature must be a positive number"),
    ("[md]\ninterval = 5\nframe_interval = 7\n", "frame_interval = 7 must be a multiple"),
    ("[training]\nholdout = 1.5\n", r"training.holdout must be in \[0, 1\)"),
    ("[models]\nestimator = 'gmm'\n[md]\nengine = 'lammps'\n", "runs the committee or llpr"),
    ("[md]\nranks = 2\n", "ranks = 2 needs engine = 'lammps'"),
    ("[selection]\nbox = 'sphere'\n", "selection.box = 'sphere' is not one of cube, host"),
    ("[selection]\nbox = 'host'\n[md]\nengine = 'lammps'\n", "'host' is cut by the ASE engine"),
    ("[selection]\nsamples = 3\n", "samples = 3 needs selection.box = 'host'"),
    ("[models]\ncommittee = ['missing.model']\n", "models.committee = 'missing.model': no such"),
    ("[test]\nfile = 'nowhere.extxyz'\n", "test.file = 'nowhere.extxyz': no such file"),
    ("[reference]\ncalculator = 'ase.calculators.nothing:DFT'\n", "cannot import module"),
    ("[reference]\ncalculator = 'ase.calculators.emt:EMTT'\n", "has no 'EMTT'"),
    ("[run\n", "is not valid TOML"),
    ("[calibration]\nwindow = 1\n", "calibration.window must be 2 or more"),
    ("[calibration]\nwindow = 0\n", "calibration.window must be a positive integer"),
    ("[selection]\nframes = 'all'\n", "selection.frames = 'all' is not one of threshold"),
    ("[selection]\nframes = 'segments'\nstrategy = 'whole-frame'\n",
     "'segments' is a way to choose boxes of the uncertainty and random"),
    ("[test]\nboxes = 4\n", "test.boxes = 4 cuts test boxes from the segments"),
    ("[selection]\nframes = 'segments'\nspan = 1.0\n[test]\nboxes = 2\n",
     "needs the part of the MD after selection.span"),
    ("[selection]\nspan = 0\n", r"selection.span must be in \(0, 1\]"),
    ("[selection]\ncentres = ['Ox']\n", "selection.centres: 'Ox' is not a chemical symbol"),
    ("[selection]\ncentres = 'O'\n", "selection.centres must be a non-empty list"),
    ("[selection]\nbox_fraction = 1.5\n", r"selection.box_fraction must be in \(0, 1\)"),
    ("[selection]\nmolecules = 'yes'\n", "selection.molecules must be true or false"),
    ("[selection]\nbox = 'host'\nmolecules = true\n", "selection.molecules shapes cubes"),
    ("[selection]\ncentres = ['Cu']\n[md]\nengine = 'lammps'\n",
     "the LAMMPS fix cuts plain cubes while the MD runs"),
])
def test_bad_input_is_refused_before_any_compute_naming_the_key(write, text, message):
    sections = text
    if "[md]" not in text and "[md" not in text:
        sections = MINIMAL + text
    elif "start" not in text:
        sections = text.replace("[md]\n", f"[md]\nstart = '{START}'\nthreshold = 0.04\n")
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        load_config(write(sections))


def test_segments_need_no_threshold_and_the_lammps_engine_may_shape_their_boxes(write):
    config = load_config(write(f"[md]\nstart = '{START}'\nengine = 'lammps'\n[selection]\n"
                               "frames = 'segments'\ncentres = ['Cu']\nmolecules = true\n"
                               "box_fraction = 0.5\n[test]\nboxes = 3\n"))
    assert config["md"]["threshold"] is None and config["test"]["boxes"] == 3
    assert config["selection"]["centres"] == ["Cu"]


def test_a_missing_start_structure_and_a_missing_threshold_are_named(write):
    with pytest.raises(ValueError, match="md.start is required"):
        load_config(write("[md]\nthreshold = 0.04\n"))
    with pytest.raises(ValueError, match="md.threshold must be a positive number, got None"):
        load_config(write(f"[md]\nstart = '{START}'\n"))
    with pytest.raises(FileNotFoundError, match="config file .* does not exist"):
        load_config(write("").parent / "absent.toml")


@pytest.mark.parametrize("content, message", [
    ("", "holds no structures|cannot read structures"),
    ("3\nnot a structure\nCu 0 0\n", "cannot read structures"),
])
def test_an_empty_or_malformed_start_file_is_a_config_error(write, content, message):
    start = write("").parent / "start.extxyz"
    start.write_text(content)
    with pytest.raises(ValueError, match=f"md.start: .*({message})"):
        load_config(write(f"[md]\nstart = '{start}'\nthreshold = 0.04\n"))


def test_every_key_is_documented_in_the_readme():
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    missing = [f"{section}.{key}" for section, keys in SCHEMA.items() for key in keys
               if f"`{section}.{key}`" not in readme]
    assert missing == []
