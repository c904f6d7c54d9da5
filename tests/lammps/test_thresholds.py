"""The threshold file of a calibration (mdmonitor.lammps.thresholds), written again when the
calibration is refitted, and `mdmonitor lammps --calibration`, whose fix takes up a refit while
LAMMPS runs."""

import re
import subprocess
import sys
import time
import warnings

import pytest

from mdmonitor import Calibration
from mdmonitor.demo import demo_slab
from mdmonitor.lammps.plugin import build
from mdmonitor.lammps.thresholds import ThresholdFile, describe
from mdmonitor.monitor import CalibrationRefused
from mdmonitor.quality.calibration import estimator_identity
from mdmonitor.quality.error_maps import ErrorMap, Term
from tests.lammps_support import BIN, ctrl_c_ignored, exported, write_data


def calibration(llpr, alpha: float = 1.0, cutoff: float = 4.0, per_element=None) -> Calibration:
    """An LLPR calibration of factor `alpha` (eV/A per unit of uncertainty), or with
    `per_element` {Z: Term} an element-power map."""
    error_map = None if per_element is None else ErrorMap(
        "element-power", ("llpr",), (0.0,), Term(1.0, (1.0,)), per_element).to_dict()
    return Calibration(alpha=alpha, cutoff=cutoff, estimator=estimator_identity(llpr),
                       n_frames=3, n_atoms=88, mean_error=0.1 * alpha, mean_uncertainty=0.1,
                       fitted="now", error_map=error_map)


def test_the_file_holds_the_calibration_s_limit_per_type_and_names_it(llpr, tmp_path):
    fitted = calibration(llpr, per_element={29: Term(0.5, (2.0,))})
    fitted.save(tmp_path / "run.json")
    thresholds = ThresholdFile(tmp_path / "thresholds.txt", tmp_path / "run.json", 0.08,
                               ["Cu", "Au", "Cu"])
    assert thresholds.update().digest == fitted.digest
    lines = (tmp_path / "thresholds.txt").read_text().splitlines()
    # Cu: 0.5 u^2 = 0.08 at u = 0.4; Au (no term): the pooled 1.0 u = 0.08 at 0.08
    assert lines[2:] == [f"label calibration {fitted.digest}, element-power map, 0.08 eV/A",
                         "cutoff 4.0", "thresholds 0.4 0.08 0.4"]
    assert describe(thresholds) == (f"{tmp_path / 'thresholds.txt'}: calibration "
                                    f"{fitted.digest}, element-power map, 0.08 eV/A at local "
                                    "uncertainty 0.4 (Cu), 0.08 (Au), 0.4 (Cu)")


def test_the_file_is_written_again_only_when_the_calibration_file_changed(llpr, tmp_path):
    calibration(llpr, alpha=2.0).save(tmp_path / "run.json")
    thresholds = ThresholdFile(tmp_path / "thresholds.txt", tmp_path / "run.json", 0.1, ["Cu"])
    thresholds.update()
    assert "thresholds 0.05\n" in (tmp_path / "thresholds.txt").read_text()
    (tmp_path / "thresholds.txt").unlink()
    assert thresholds.update() is None and not (tmp_path / "thresholds.txt").exists()
    refit = calibration(llpr, alpha=0.5)
    refit.save(tmp_path / "run.json")
    assert thresholds.update().digest == refit.digest
    assert "thresholds 0.2\n" in (tmp_path / "thresholds.txt").read_text()


def test_a_refit_at_another_cutoff_is_refused_and_the_file_kept(llpr, tmp_path):
    first = calibration(llpr)
    first.save(tmp_path / "run.json")
    thresholds = ThresholdFile(tmp_path / "thresholds.txt", tmp_path / "run.json", 0.1, ["Cu"])
    thresholds.update()
    kept = (tmp_path / "thresholds.txt").read_text()
    calibration(llpr, cutoff=5.0).save(tmp_path / "run.json")
    with pytest.warns(CalibrationRefused, match=f"within 5 A, the run's are within 4 A; .* "
                                                f"keeps calibration {first.digest}"):
        assert thresholds.update() is None
    assert (tmp_path / "thresholds.txt").read_text() == kept
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert thresholds.update() is None  # refused once per change


def test_elements_must_be_symbols(tmp_path):
    with pytest.raises(ValueError, match="type_elements must be element symbols"):
        ThresholdFile(tmp_path / "t.txt", tmp_path / "run.json", 0.1, ["Cu", "Xx"])


def test_the_threshold_watcher_reads_a_calibration_without_importing_torch_or_mace():
    """`mdmonitor lammps --calibration` starts it beside LAMMPS: their import costs 5 s of CPU
    for a program that only reads a JSON file."""
    done = subprocess.run([sys.executable, "-c", "import sys, mdmonitor.lammps.thresholds; "
                           "print(sorted({'torch', 'mace'} & set(sys.modules)))"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[-2] == "[]"


# nevery 1 and `run 0` until the fix has taken up a second threshold set: the refit replaces
# the calibration, `mdmonitor lammps-thresholds --watch` rewrites the file within its poll
WAIT_FOR_REFIT = """fix mon all mdmonitor 1 cutoff 4.0 threshold_file thresholds.txt
thermo_style custom step f_mon[3] f_mon[6]
run 0
shell mv refit.json run.json
variable wait loop 120
label poll
shell sleep 1
run 0 post no
if "$(f_mon[6]) >= 2" then "jump SELF done"
next wait
jump SELF poll
label done
"""


def test_mdmonitor_lammps_follows_a_calibration_refitted_while_it_runs(llpr, tmp_path):
    """Started with Ctrl-C ignored, as `mdmonitor lammps ... &` in a script: it still ends its
    threshold watcher (it hung when it stopped the watcher by SIGINT)."""
    plugin = build()
    assert plugin.is_file()
    write_data(demo_slab(), tmp_path / "slab.data")
    (tmp_path / "in.lmp").write_text(
        f"units metal\natom_style atomic\nread_data slab.data\n"
        f"pair_style mdmonitor {exported('llpr')}\npair_coeff * * Cu\n{WAIT_FOR_REFIT}")
    first, refit = calibration(llpr, alpha=1.0), calibration(llpr, alpha=0.5)
    first.save(tmp_path / "run.json")
    refit.save(tmp_path / "refit.json")
    done = subprocess.run([str(BIN / "mdmonitor"), "lammps", "in.lmp", "--calibration",
                           "run.json", "--error-threshold", "0.04", "--elements", "Cu"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          preexec_fn=ctrl_c_ignored)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    taken = re.findall(r"^fix mon mdmonitor: step 0: threshold set (\d) from thresholds.txt "
                       r"\(calibration (\w+), alpha map, 0.04 eV/A\): (\S+)$",
                       (tmp_path / "log.lammps").read_text(), re.MULTILINE)
    assert taken == [("1", first.digest, "0.04"), ("2", refit.digest, "0.08")]
    assert f"thresholds.txt: calibration {refit.digest}, alpha map" in done.stdout


def test_mdmonitor_lammps_refuses_thresholds_without_a_calibration(tmp_path):
    (tmp_path / "in.lmp").write_text("print hello\n")
    done = subprocess.run([str(BIN / "mdmonitor"), "lammps", "in.lmp", "--error-threshold",
                           "0.04"], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode != 0
    assert "--error-threshold choose the thresholds of --calibration FILE" in done.stderr


def test_mdmonitor_lammps_with_a_calibration_it_cannot_read_starts_no_lammps(tmp_path):
    (tmp_path / "in.lmp").write_text("print hello\n")
    (tmp_path / "thresholds.txt").write_text("thresholds 0.1\n")  # of an earlier run
    (tmp_path / "broken.json").write_text("{")
    done = subprocess.run([str(BIN / "mdmonitor"), "lammps", "in.lmp", "--calibration",
                           "broken.json", "--error-threshold", "0.04", "--elements", "Cu"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode != 0
    assert "broken.json" in done.stderr
    assert not (tmp_path / "log.lammps").exists()
    assert not (tmp_path / "thresholds.txt").exists()


def test_the_watcher_writes_each_refit_and_keeps_the_file_on_a_bad_one(llpr, tmp_path):
    """`mdmonitor lammps-thresholds --watch`: a refit is written within a few polls; a
    calibration file that cannot be read is reported on stderr and the thresholds kept; SIGTERM
    ends it as Ctrl-C does (how `mdmonitor lammps` stops it)."""
    calibration(llpr, alpha=1.0).save(tmp_path / "run.json")
    watcher = subprocess.Popen([str(BIN / "mdmonitor"), "lammps-thresholds", "run.json",
                                "--error-threshold", "0.04", "--elements", "Cu", "--watch",
                                "--poll", "0.2"], cwd=tmp_path, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        written = tmp_path / "thresholds.txt"
        assert until(lambda: written.exists() and "thresholds 0.04\n" in written.read_text())
        calibration(llpr, alpha=0.5).save(tmp_path / "run.json")
        assert until(lambda: "thresholds 0.08\n" in written.read_text())
        (tmp_path / "run.json").write_text("{not json")
        time.sleep(2.0)  # ten polls
    finally:
        watcher.terminate()
        out, err = watcher.communicate(timeout=60)
    assert watcher.returncode == 0, err
    assert "thresholds 0.08\n" in written.read_text()
    assert "thresholds.txt not updated: cannot read calibration file 'run.json'" in err
    assert err.count("not updated") == 1  # once per change


def until(condition, seconds: float = 120.0) -> bool:
    """Whether `condition()` became true within `seconds`, checked every 0.1 s."""
    end = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > end:
            return False
        time.sleep(0.1)
    return True
