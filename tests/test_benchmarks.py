"""The benchmark suite's result format and RESULTS.md writer (benchmarks/run_all.py), on
hand-made results and stand-in benchmark scripts: the real benchmarks take minutes."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import results  # noqa: E402
import run_all  # noqa: E402

RESULT = {"title": "Stand-in benchmark", "command": ".venv/bin/python benchmarks/ok.py --quick",
          "tables": [{"caption": "96 atoms", "columns": ["case", "ms", "x plain"],
                      "rows": [["plain call", 55.63, 1.0], ["monitored", 181.4, 3.261],
                               ["aggregation", 0.6, 0.0107], ["large cell", 1481.2, 2]]}],
          "notes": ["torch on 1 thread"]}


def test_a_result_becomes_a_markdown_section_with_its_tables_and_notes():
    text = results.markdown(RESULT)
    assert text.startswith("## Stand-in benchmark\n\n`.venv/bin/python benchmarks/ok.py --quick`")
    assert ("**96 atoms**\n\n| case | ms | x plain |\n|---|---|---|\n| plain call | 55.6 | 1 |\n"
            "| monitored | 181 | 3.26 |\n| aggregation | 0.6 | 0.0107 |\n"
            "| large cell | 1481 | 2 |\n") in text
    assert text.endswith("- torch on 1 thread\n")


def test_report_prints_aligned_columns_and_writes_the_json_without_its_own_option(tmp_path,
                                                                                  capsys):
    path = tmp_path / "result.json"
    results.report(RESULT["title"], RESULT["tables"], RESULT["notes"], "benchmarks/ok.py",
                   ["--quick", "--json", str(path)], path)
    assert json.loads(path.read_text()) == RESULT
    lines = capsys.readouterr().out.splitlines()
    header = lines.index("case           ms  x plain")
    assert lines[header + 1:header + 3] == ["-----------  ----  -------",
                                            "plain call   55.6        1"]


def test_a_failing_benchmark_is_reported_and_makes_the_suite_fail_after_the_others(tmp_path):
    good, bad = tmp_path / "good.py", tmp_path / "bad.py"
    good.write_text("import json, sys\n"
                    "assert '--quick' in sys.argv\n"
                    "path = sys.argv[sys.argv.index('--json') + 1]\n"
                    f"open(path, 'w').write(json.dumps({RESULT!r}))\n")
    bad.write_text("import sys\nsys.exit('the model file is missing')\n")
    output = tmp_path / "RESULTS.md"
    assert run_all.run([bad, good], output, quick=True, command="run_all.py --quick") == 1
    text = output.read_text()
    assert text.startswith("# mdmonitor benchmarks (quick)\n\n`run_all.py --quick`\n")
    assert "- load average (1 / 5 / 15 min) before: " in text and "- Python 3." in text
    assert "## bad: FAILED" in text and "exit status 1" in text
    assert "the model file is missing" in text
    assert results.markdown(RESULT).rstrip() in text
    assert "- wall time of the script: " in text
    assert run_all.run([good], output, quick=True, command="run_all.py --quick") == 0
    assert "FAILED" not in output.read_text()
