"""Append-only CSV log of the monitor: one line per monitored frame, flushed as written.

`instability` holds the codes of the stability criteria a frame violates (see
mdmonitor.stability), joined by "+", e.g. "close-contact+hot"; it is empty on a stable frame.
`calibration` is the `digest` of the calibration the frame was monitored with (empty without
one): a monitor that follows a calibration file as it is refitted switches at a logged step.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

COLUMNS = ("step", "time_fs", "max_local_uncertainty", "max_local_atom",
           "mean_local_uncertainty", "max_atomic_uncertainty", "n_above_threshold",
           "instability", "calibration")
TEXT_COLUMNS = ("instability", "calibration")


class MonitorLog:
    """CSV file with the header `COLUMNS`; an existing log is appended to, never rewritten.

    Each line goes out in a single write and is flushed, so a crash loses no finished line and
    leaves no half line.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        header = ",".join(COLUMNS)
        if self.path.is_file() and self.path.stat().st_size > 0:
            with open(self.path) as handle:
                first = handle.readline().strip()
            if first == ",".join(COLUMNS[:-1]):
                raise ValueError(f"'{self.path}' is the log of an earlier mdmonitor, without "
                                 "the calibration column; choose another log file")
            if first != header:
                raise ValueError(f"'{self.path}' exists but is not an mdmonitor log "
                                 f"(first line '{first[:80]}'); choose another log file")
            self._handle = open(self.path, "a")
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._handle = open(self.path, "a")
            self._write(header)

    def _write(self, line: str) -> None:
        self._handle.write(line + "\n")
        self._handle.flush()

    def append(self, instability: str | None = None, calibration: str | None = None,
               **row) -> None:
        """Write one row; keys are `COLUMNS` (`instability` may be left out: a stable frame;
        `calibration` too: none)."""
        row.update(instability=instability, calibration=calibration)
        self._write(",".join(format_value(row[name]) for name in COLUMNS))

    def close(self) -> None:
        self._handle.close()


def format_value(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.8g}"
    return str(value)


def read_log(path: str | Path) -> list[dict]:
    """The rows of a monitor log as dicts by column, values as float (None where empty) but
    the text of `TEXT_COLUMNS` ("" where empty); no rows for a missing file."""
    path = Path(path)
    if not path.is_file():
        return []
    with open(path) as handle:
        return [{k: v if k in TEXT_COLUMNS else (float(v) if v else None)
                 for k, v in row.items()} for row in csv.DictReader(handle)]
