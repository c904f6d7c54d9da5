"""The benchmark suite in one command.

Runs each benchmark script in its own process with `--json` (and `--quick` when given), then
writes their tables and notes as Markdown after a header with the command, the date, the
machine and the versions. Exits non-zero when any benchmark failed, after writing the rest.
`--large` runs the large systems' benchmark alone (`lammps_large`, 10^5 atoms: longer than the
suite's other parts together) into benchmarks/RESULTS-large.md.

    .venv/bin/python benchmarks/run_all.py [--quick] [--large] [--output benchmarks/RESULTS.md]

Each script's result has the format of `results.py`.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import importlib.metadata
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from results import ROOT, command_of, markdown

HERE = Path(__file__).resolve().parent
BENCHMARKS = ("monitor_overhead", "aggregation", "extraction", "lammps_speed", "labeling")
LARGE = ("lammps_large",)
PACKAGES = ("torch", "mace-torch", "numba", "vesin", "lammps", "ase", "numpy")


def run_benchmark(script: Path, directory: Path, quick: bool, options: list[str] = ()) -> dict:
    """Run one benchmark script in its own process; its result, or a failure section.

    Its output goes to this terminal as it runs; the last lines of its stderr are kept for
    the failure note. The wall time is added as a note.
    """
    json_path = directory / f"{script.stem}.json"
    command = [sys.executable, str(script.resolve()), "--json", str(json_path),
               *(["--quick"] * quick), *options]
    print(f"\n==== {shlex.join(command)}", flush=True)
    start = time.perf_counter()
    tail = collections.deque(maxlen=15)
    with subprocess.Popen(command, cwd=ROOT, stderr=subprocess.PIPE, text=True) as process:
        for line in process.stderr:
            sys.stderr.write(line)
            tail.append(line.rstrip())
    seconds = time.perf_counter() - start
    if process.returncode == 0 and json_path.exists():
        result = json.loads(json_path.read_text())
        result["notes"].append(f"wall time of the script: {seconds:.0f} s")
        return result
    note = f"exit status {process.returncode} after {seconds:.0f} s, no result"
    if tail:
        note += "; the end of its stderr:\n\n  ```\n" + "".join(f"  {line}\n" for line in tail)
        note += "  ```"
    return {"title": f"{script.stem}: FAILED", "failed": script.stem, "tables": [], "notes": [note],
            "command": command_of(str(script), ["--quick"] * quick + list(options))}


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo ("unknown" elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def versions() -> str:
    """Installed versions of the packages the benchmarks measure."""
    found = []
    for name in PACKAGES:
        try:
            found.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            found.append(f"{name} not installed")
    return ", ".join(found)


def thread_defaults() -> str:
    """torch's and numba's default thread counts in this environment."""
    import numba
    import torch

    return (f"torch {torch.get_num_threads()} (intra-op), numba {numba.config.NUMBA_NUM_THREADS}; "
            f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")


def load() -> str:
    return " / ".join(f"{x:.2f}" for x in os.getloadavg())


def run(scripts: list[Path], output: Path, quick: bool, command: str, kind: str = "",
        options: list[str] = ()) -> int:
    """Run `scripts`, write their results to `output` (Markdown) under a title naming `kind`
    (e.g. "large", and "quick" with `quick`), each given `options`; 1 if any failed, else 0."""
    kinds = ", ".join(k for k in (kind, "quick" if quick else "") if k)
    header = [f"# mdmonitor benchmarks{f' ({kinds})' if kinds else ''}", "",
              f"`{command}`", "",
              f"- date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}",
              f"- machine: {cpu_model()}, {os.cpu_count()} cores, {platform.platform()}",
              f"- load average (1 / 5 / 15 min) before: {load()}",
              f"- Python {platform.python_version()}; {versions()}",
              f"- default threads: {thread_defaults()}; each benchmark notes the threads it used"]
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mdmonitor-benchmarks-") as directory:
        results = [run_benchmark(script, Path(directory), quick, options) for script in scripts]
    header += [f"- load average after: {load()}",
               f"- wall time: {time.perf_counter() - start:.0f} s", ""]
    output.write_text("\n".join(header) + "\n" + "\n".join(markdown(r) for r in results))
    failed = [r["failed"] for r in results if "failed" in r]
    print(f"\nwrote {output}" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="every benchmark in its quick mode (a few minutes)")
    parser.add_argument("--large", action="store_true",
                        help="the large systems' benchmark alone (10^5 atoms, about 40 min)")
    parser.add_argument("--output", type=Path, default=None,
                        help="Markdown file to write (default benchmarks/RESULTS.md, "
                             "RESULTS-large.md with --large, RESULTS-quick.md or "
                             "RESULTS-large-quick.md with --quick)")
    parser.add_argument("options", nargs=argparse.REMAINDER,
                        help="after --: options for the benchmark scripts, e.g. `--large -- "
                             "--steps 2`")
    args = parser.parse_args(argv)
    args.options = args.options[1:] if args.options[:1] == ["--"] else args.options
    stem = "RESULTS" + "-large" * args.large + "-quick" * args.quick
    output = args.output or HERE / f"{stem}.md"
    command = shlex.join([".venv/bin/python", "benchmarks/run_all.py",
                          *(sys.argv[1:] if argv is None else argv)])
    return run([HERE / f"{name}.py" for name in (LARGE if args.large else BENCHMARKS)], output,
               args.quick, command, "large" if args.large else "", args.options)


if __name__ == "__main__":
    sys.exit(main())
