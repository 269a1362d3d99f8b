"""README.md is a manual: short, and its one results table is copied from BENCHMARKS.md (which
bench.py writes), never typed in or left behind by a newer run."""

import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUMBER = re.compile(r"(?<![\d.])\d+(?:\.\d+)?")


def read(name):
    with open(os.path.join(ROOT, name)) as f:
        return f.read()


def results_rows(readme):
    """The value cells (every column but the first) of the table under README's Results heading."""
    section = readme.split("\n## Results", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("|") and "---" not in line]
    return [[cell.strip() for cell in row.strip("|").split("|")[1:]] for row in rows[1:]]


def test_the_readme_is_at_most_250_lines():
    assert len(read("README.md").splitlines()) <= 250


def test_every_figure_in_the_results_table_is_in_benchmarks_md():
    benchmarks = read("BENCHMARKS.md")
    rows = results_rows(read("README.md"))
    assert len(rows) >= 8
    figures = [number for row in rows for cell in row for number in NUMBER.findall(cell)]
    assert figures
    missing = [figure for figure in figures
               if not re.search(rf"(?<![\d.]){re.escape(figure)}(?!\d)", benchmarks)]
    assert not missing, f"README's results table has figures BENCHMARKS.md does not: {missing}"
