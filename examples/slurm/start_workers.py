"""Start Dask workers as SLURM jobs for `mdmonitor label --scheduler` (needs mdmonitor[hpc]).

On a login node, in one terminal (it keeps the scheduler alive until Ctrl-C):

    python examples/slurm/start_workers.py --jobs 8

and in another, on a node that sees the queue directory at the same path as the workers:

    mdmonitor label candidates --reference ase.calculators.vasp:Vasp -p xc=PBE -p encut=520 \
        --scheduler tcp://$(hostname):8786 --timeout 7200 --watch

Each SLURM job is one worker labeling one box at a time (jobqueue.yaml beside this script:
cores, memory, partition, modules). `--adapt` lets SLURM jobs come and go with the queue's work
instead of keeping `--jobs` of them. `--print-job-script` prints the batch script and stops.
"""

import argparse
import time
from pathlib import Path

import yaml
from dask_jobqueue import SLURMCluster


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=4, help="SLURM jobs (workers), default 4")
    parser.add_argument("--adapt", action="store_true",
                        help="between 0 and --jobs jobs, as the work asks")
    parser.add_argument("--config", type=Path, default=Path(__file__).with_name("jobqueue.yaml"))
    parser.add_argument("--print-job-script", action="store_true")
    args = parser.parse_args(argv)
    settings = yaml.safe_load(args.config.read_text())["jobqueue"]["slurm"]
    cluster = SLURMCluster(**{key.replace("-", "_"): value for key, value in settings.items()})
    if args.print_job_script:
        print(cluster.job_script())
        cluster.close()
        return
    if args.adapt:
        cluster.adapt(minimum_jobs=0, maximum_jobs=args.jobs)
    else:
        cluster.scale(jobs=args.jobs)
    print(f"Dask scheduler at {cluster.scheduler_address}: give it to "
          f"`mdmonitor label QUEUE --scheduler {cluster.scheduler_address} ...`; Ctrl-C stops "
          "the workers", flush=True)
    try:
        while True:
            time.sleep(60)
    except KeyboardInterrupt:
        cluster.close()


if __name__ == "__main__":
    main()
