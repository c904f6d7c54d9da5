"""The result every benchmark script prints and writes with --json, and its Markdown form.

    {"title": str, "command": str,
     "tables": [{"caption": str, "columns": [str, ...], "rows": [[str | number, ...], ...]}],
     "notes": [str, ...]}
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def benchmark_parser(doc: str) -> argparse.ArgumentParser:
    """Argument parser with the options every benchmark has: --quick and --json PATH."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="fewer repeats and cases (a smoke run, not a measurement)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the result here")
    return parser


def table(caption: str, columns: list[str], rows: list[list]) -> dict:
    """One table of a result: rows of strings and numbers under `columns`."""
    return {"caption": caption, "columns": list(columns), "rows": [list(row) for row in rows]}


def cell(value) -> str:
    """A table entry as text: floats to 3 significant digits (whole numbers from 1000 on)."""
    if isinstance(value, float):
        return f"{value:.0f}" if abs(value) >= 1000 else f"{value:.3g}"
    return str(value)


def command_of(script: str, argv: list[str]) -> str:
    """The shell command that reruns `script` with `argv`, without its --json option."""
    words = [word for word in argv if not word.startswith("--json=")]
    if "--json" in words:
        at = words.index("--json")
        del words[at:at + 2]
    return shlex.join([".venv/bin/python", f"benchmarks/{Path(script).name}", *words])


def report(title: str, tables: list[dict], notes: list[str], script: str,
           argv: list[str] | None, json_path: Path | None) -> dict:
    """Print a benchmark's result as aligned text and write it to `json_path` (if given)."""
    result = {"title": title, "command": command_of(script, sys.argv[1:] if argv is None else argv),
              "tables": tables, "notes": notes}
    print(f"\n{title}\n  {result['command']}")
    for entry in tables:
        text = [entry["columns"]] + [[cell(v) for v in row] for row in entry["rows"]]
        widths = [max(len(row[k]) for row in text) for k in range(len(entry["columns"]))]
        print(f"\n{entry['caption']}")
        for k, row in enumerate(text):
            print("  ".join(v.ljust(w) if c == 0 else v.rjust(w)
                            for c, (v, w) in enumerate(zip(row, widths))))
            if k == 0:
                print("  ".join("-" * w for w in widths))
    for note in notes:
        print(f"- {note}")
    if json_path is not None:
        json_path.write_text(json.dumps(result, indent=1))
    return result


def markdown(result: dict) -> str:
    """A benchmark's result as a Markdown section: title, command, tables, notes."""
    lines = [f"## {result['title']}", "", f"`{result['command']}`", ""]
    for entry in result["tables"]:
        lines += [f"**{entry['caption']}**", "",
                  "| " + " | ".join(entry["columns"]) + " |",
                  "|" + "---|" * len(entry["columns"])]
        lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in entry["rows"]]
        lines.append("")
    lines += [f"- {note}" for note in result["notes"]]
    return "\n".join(lines) + "\n"
