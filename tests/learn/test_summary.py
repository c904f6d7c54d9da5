"""run/summary.csv and summary.png: a start row whether or not the config has a test set (the
figure's test panels then say that there is none)."""

import csv
import json

from mdmonitor.learn.summary import write_summary
from mdmonitor.monitor_log import MonitorLog


class Config(dict):
    """The one key write_summary reads."""


def finished_generation(root, atoms_labeled):
    directory = root / "generation-000"
    directory.mkdir(parents=True)
    log = MonitorLog(directory / "monitor.csv")
    log.append(step=0, time_fs=0.0, max_local_uncertainty=0.02, max_local_atom=3,
               mean_local_uncertainty=0.01, max_atomic_uncertainty=0.03, n_above_threshold=1,
               instability="")
    log.close()
    (directory / "state.json").write_text(json.dumps(
        {"stage": "done", "md_steps": 10, "boxes": 2, "labeled": 2,
         "atoms_labeled": atoms_labeled, "training": [
             {"kept_epoch": 3, "epochs": 4, "valid_force_rmse_start": 0.1,
              "valid_force_rmse_kept": 0.05}]}))


def test_without_a_test_set_the_summary_has_a_start_row_and_a_figure(tmp_path):
    finished_generation(tmp_path, atoms_labeled=54)
    rows = write_summary(tmp_path, Config(selection={"strategy": "uncertainty"}))
    assert [r["generation"] for r in rows] == ["start", 0]
    with open(tmp_path / "summary.csv") as handle:
        written = list(csv.DictReader(handle))
    assert written[0]["generation"] == "start" and written[0]["atoms_labeled_total"] == "0"
    assert written[1]["atoms_labeled_total"] == "54" and written[1]["kept_epochs"] == "3"
    assert written[1]["test_force_mae"] == ""
    assert (tmp_path / "summary.png").stat().st_size > 0
