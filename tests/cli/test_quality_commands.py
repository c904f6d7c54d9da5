"""`mdmonitor calibrate` and `mdmonitor evaluate` from the shell."""

import json

import ase.io
import numpy as np
import pytest

from mdmonitor import Calibration, Committee, aggregate
from mdmonitor.cli import main
from mdmonitor.quality.error_maps import describe_choice
from tests.labeled_frames import cu_frames, emt_labeled, unranked_errors


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
    assert "--drive" in text


def test_calibrate_writes_alpha_for_the_committee_and_cutoff(models, committee, labeled_file,
                                                              tmp_path, capsys):
    out = tmp_path / "alpha.json"
    assert main(["calibrate", str(labeled_file), "--committee", *models["committee"],
                 "--cutoff", "3.5", "-o", str(out)]) == 0
    calibration = Calibration.load(out)
    calibration.check(committee, 3.5)
    assert calibration.n_frames == 3 and calibration.source == str(labeled_file)
    printed = capsys.readouterr().out
    assert f"alpha = {calibration.alpha:.4g} eV/A per eV/A" in printed
    # --form auto: the margin of the choice is reported
    assert f"  chosen: {describe_choice(calibration.held_out_nll, calibration.form)}\n" in printed


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


def local_errors(estimator, frames, cutoff=4.0):
    """Per frame, the local force errors (eV/A) of the estimator's forces against REF_forces."""
    return [aggregate(atoms, np.abs(estimator.predict(atoms).forces
                                    - atoms.arrays["REF_forces"]).mean(axis=1), cutoff)
            for atoms in frames]


def test_calibrate_and_evaluate_take_a_committee_driven_by_one_member(models, committee,
                                                                      labeled_file, tmp_path,
                                                                      capsys):
    # the force errors are member 0's, not the mean's (issue 25: evaluable from Python only)
    driven = Committee.from_mace(models["committee"], driver=0)
    frames = ase.io.read(labeled_file, index=":")
    member_errors = local_errors(driven, frames)
    out = tmp_path / "driven.json"
    assert main(["calibrate", str(labeled_file), "--committee", *models["committee"],
                 "--drive", "member:0", "--form", "alpha", "-o", str(out)]) == 0
    calibration = Calibration.load(out)
    assert calibration.estimator["driver"] == 0
    calibration.check(driven, 4.0)
    assert calibration.mean_error == pytest.approx(np.concatenate(member_errors).mean())
    assert calibration.mean_error != pytest.approx(
        np.concatenate(local_errors(committee, frames)).mean(), rel=1e-3)

    report_dir = tmp_path / "report"
    assert main(["evaluate", str(labeled_file), "--committee", *models["committee"],
                 "--drive", "member:0", "--out", str(report_dir)]) == 0
    report = json.loads((report_dir / "report.json").read_text())
    assert report["estimator"]["driver"] == 0
    test = [i for i in range(len(frames)) if i not in report["calibration_frames"]]
    four = next(row for row in report["levels"] if row["level"] == "4 A")
    assert four["test_mae_eV_per_A"] == pytest.approx(
        np.concatenate([member_errors[i] for i in test]).mean())
    assert "driven by member 0" in (report_dir / "report.md").read_text()


def test_calibrate_says_when_the_map_is_constant(models, committee, tmp_path, capsys):
    frames = cu_frames()
    path = tmp_path / "unranked.extxyz"
    ase.io.write(path, unranked_errors(frames, [committee.predict(a) for a in frames]),
                 format="extxyz")
    with pytest.warns(UserWarning, match="this signal does not rank the errors"):
        assert main(["calibrate", str(path), "--committee", *models["committee"], "--form",
                     "power", "-o", str(tmp_path / "power.json")]) == 0
    assert ("warning: the map is constant for Cu: this signal does not rank the errors"
            in capsys.readouterr().out)
