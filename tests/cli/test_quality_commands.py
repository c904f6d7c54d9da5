"""`mdmonitor calibrate` and `mdmonitor evaluate` from the shell."""

import json

import ase.io
import pytest

from mdmonitor import Calibration
from mdmonitor.cli import main
from tests.labeled_frames import cu_frames, emt_labeled


@pytest.fixture(scope="module")
def labeled_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("labeled") / "labeled.extxyz"
    ase.io.write(path, emt_labeled(cu_frames()), format="extxyz")
    return path


@pytest.mark.parametrize("command", ["calibrate", "evaluate"])
def test_calibration_commands_have_help(command, capsys):
    with pytest.raises(SystemExit) as done:
        main([command, "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    assert "--committee" in text and "--llpr" in text and "--forces-key" in text


def test_calibrate_writes_alpha_for_the_committee_and_cutoff(models, committee, labeled_file,
                                                              tmp_path, capsys):
    out = tmp_path / "alpha.json"
    assert main(["calibrate", str(labeled_file), "--committee", *models["committee"],
                 "--cutoff", "3.5", "-o", str(out)]) == 0
    calibration = Calibration.load(out)
    calibration.check(committee, 3.5)
    assert calibration.n_frames == 3 and calibration.source == str(labeled_file)
    assert f"alpha = {calibration.alpha:.4g} eV/A per eV/A" in capsys.readouterr().out


def test_evaluate_writes_the_report_directory(models, labeled_file, tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["evaluate", str(labeled_file), "--llpr", models["llpr"], "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["estimator"]["kind"] == "llpr" and report["frames"] == 3
    assert (out / "report.md").is_file() and (out / "error_vs_uncertainty.png").is_file()
    printed = capsys.readouterr().out
    assert "per atom" in printed and "structure" in printed


def test_unlabeled_frames_are_a_clear_error(models, tmp_path, capsys):
    path = tmp_path / "unlabeled.extxyz"
    ase.io.write(path, cu_frames(), format="extxyz")
    code = main(["calibrate", str(path), "--llpr", models["llpr"], "-o", str(tmp_path / "a.json")])
    assert code == 1
    assert "mdmonitor calibrate: error: frame 0 has no reference forces" in capsys.readouterr().err
    assert not (tmp_path / "a.json").exists()
