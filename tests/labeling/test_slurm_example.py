"""The SLURM example renders a batch script that starts one single-threaded Dask worker per job
on the cores its configuration books (SLURM itself cannot run here)."""

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("dask_jobqueue")
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "slurm" / "start_workers.py"


def test_the_slurm_example_renders_its_batch_script_from_its_configuration():
    script = subprocess.run([sys.executable, str(EXAMPLE), "--print-job-script"],
                            capture_output=True, text=True, check=True, timeout=120).stdout
    assert "#SBATCH -p compute" in script and "#SBATCH --cpus-per-task=32" in script
    assert "#SBATCH --exclusive" in script and "module load vasp/6.4" in script
    worker = next(line for line in script.splitlines() if "distributed.cli.dask_worker" in line)
    assert ":8786 " in worker and "--nthreads 1 " in worker and "--nanny" in worker
