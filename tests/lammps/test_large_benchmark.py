"""benchmarks/lammps_large.py at its smallest: 108 atoms in chunks of 60, one timed step, on one
and two ranks (the plain pair style alone: no step of fix mdmonitor's interval is timed), each
rank's peak RSS read through the script's wrapper between mpirun and lmp."""

import json
import subprocess
import sys
from pathlib import Path

from mdmonitor.lammps.plugin import build

SCRIPT = Path(__file__).parents[2] / "benchmarks" / "lammps_large.py"


def test_the_smallest_size_runs_on_one_and_two_ranks_with_each_ranks_peak_memory(tmp_path):
    build()
    path = tmp_path / "large.json"
    subprocess.run([sys.executable, str(SCRIPT), "--cells", "3", "--steps", "1", "--chunk", "60",
                    "--json", str(path)], check=True, capture_output=True, text=True)
    result = json.loads(path.read_text())
    speed, goals = result["tables"]
    assert "chunk 60" in speed["caption"]
    columns = speed["columns"]
    rows = [dict(zip(columns, row)) for row in speed["rows"]]
    assert [(row["atoms"], row["MPI ranks"], row["case"]) for row in rows] == [
        (108, 1, "plain pair style"), (108, 2, "plain pair style")]
    for row in rows:
        per_rank = [float(gib) for gib in row["peak RSS per rank (GiB)"].split(" / ")]
        assert len(per_rank) == row["MPI ranks"] and all(0.1 < gib < 2 for gib in per_rank)
        assert row["s/step"] > 0 and row["x plain"] == 1
    assert [goal[0] for goal in goals["rows"]] == ["2 ranks over 1 (wall) at 108 atoms",
                                                   "2 ranks over 1 (CPU) at 108 atoms"]
    assert any("no step would be monitored" in note for note in result["notes"])
