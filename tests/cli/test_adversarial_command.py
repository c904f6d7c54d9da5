"""`mdmonitor adversarial`: start structures in, adversarial structures in the queue out, and
bad input refused with one line naming it."""

import ase.io
import pytest
from ase.build import fcc100

from mdmonitor.cli import main
from mdmonitor.extraction.candidates import CandidateQueue


@pytest.fixture
def start(tmp_path):
    """Two frames of a 16-atom Cu(100) slab, rattled, in an extxyz file."""
    frames = []
    for seed in (1, 2):
        atoms = fcc100("Cu", size=(2, 2, 4), a=3.61, vacuum=6.0, periodic=True)
        atoms.info.clear()
        atoms.rattle(0.05, seed=seed)
        frames.append(atoms)
    ase.io.write(tmp_path / "start.extxyz", frames)
    return tmp_path / "start.extxyz"


def test_every_start_frame_gives_a_queued_structure(models, start, tmp_path, capsys):
    queue = tmp_path / "queue"
    code = main(["adversarial", str(start), "--llpr", models["llpr"], "-n", "3", "--kT", "1",
                 "--step", "0.01", "--queue", str(queue)])
    out = capsys.readouterr().out
    assert code == 0
    assert out.count(" in 3 steps, energy ") == 2, out
    boxes = CandidateQueue(queue).boxes("pending")
    assert [b.name[:26] for b in boxes] == ["adversarial_step000000000_",
                                            "adversarial_step000000001_"]
    for path in boxes:
        box = CandidateQueue(queue).read(path)
        assert box.info["adversarial_uncertainty_end"] > box.info["adversarial_uncertainty_start"]
        assert box.info["adversarial_iterations"] == 3
    again = main(["adversarial", str(start), "--llpr", models["llpr"], "-n", "3", "--kT", "1",
                  "--step", "0.01", "--queue", str(queue)])
    assert again == 0 and "0 new structures" in capsys.readouterr().out


def test_boxes_are_cut_around_the_most_uncertain_region(models, start, tmp_path):
    queue = tmp_path / "queue"
    code = main(["adversarial", str(start), "--gmm", models["gmm"], "-n", "1", "--queue",
                 str(queue), "--box", "cube", "--box-length", "8", "--core-radius", "3",
                 "--relax", "label", "--run-id", "adv-gmm", "--training-set",
                 models["training_set"], "--samples", "2"])
    assert code == 0
    boxes = CandidateQueue(queue).boxes("pending")
    assert len(boxes) == 4  # 2 frames x 2 samples
    assert sorted(b.name[-10:-7] for b in boxes) == ["s00", "s00", "s01", "s01"]
    box = CandidateQueue(queue).read(boxes[0])
    assert box.info["strategy"] == "cube" and box.info["relaxation"] == "pending"
    assert box.info["adversarial_uncertainty"] == "GMM negative log-likelihood"


@pytest.mark.parametrize("option, value, message", [
    ("--kT", "0", "argument --kT: value must be a positive number, got 0.0"),
    ("--kT", "-0.05", "argument --kT: value must be a positive number, got -0.05"),
    ("--step", "-0.01", "argument --step: value must be a positive number, got -0.01"),
    ("--energy-cap", "0", "argument --energy-cap: value must be a positive number"),
])
def test_settings_out_of_range_are_usage_errors(models, start, option, value, message, capsys):
    with pytest.raises(SystemExit) as done:
        main(["adversarial", str(start), "--llpr", models["llpr"], option, value])
    assert done.value.code == 2
    assert message in capsys.readouterr().err


def test_an_unreadable_start_file_is_one_clear_line(models, tmp_path, capsys):
    bad = tmp_path / "start.extxyz"
    bad.write_text("this is not\nan extxyz file\n")
    assert main(["adversarial", str(bad), "--llpr", models["llpr"]]) == 1
    err = capsys.readouterr().err
    assert "error: cannot read structures from" in err and str(bad) in err
    assert main(["adversarial", str(tmp_path / "missing.extxyz"), "--llpr",
                 models["llpr"]]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_an_element_the_model_does_not_know_is_one_clear_line(models, tmp_path, capsys):
    atoms = fcc100("Cu", size=(2, 2, 4), a=3.61, vacuum=6.0, periodic=True)
    atoms.info.clear()
    atoms.numbers[0] = 28  # Ni
    ase.io.write(tmp_path / "start.extxyz", atoms)
    code = main(["adversarial", str(tmp_path / "start.extxyz"), "--committee",
                 *models["committee"][:2], "--queue", str(tmp_path / "queue")])
    assert code == 1
    assert "element(s) ['Ni'] not known to model" in capsys.readouterr().err


def test_help_names_the_paper_and_the_options(capsys):
    with pytest.raises(SystemExit) as done:
        main(["adversarial", "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert "Eqs. 15-16" in out and "--energy-cap" in out and "--kT" in out
