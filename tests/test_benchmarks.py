"""The benchmark scripts run and print their tables (tiny sizes: no timing claims)."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
METHODS = ["adam", "sam", "crr", "crr_chunks2"]


def _table(*options):
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "crr_vs_sam.py"), *options],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = {}
    for line in result.stdout.splitlines():
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if len(cells) == 4 and cells[0] in METHODS:
            rows[cells[0]] = cells
    return result.stdout, rows


@pytest.mark.parametrize("setting", [[], ["--processes"]], ids=["shared", "apart"])
def test_crr_vs_sam_prints_one_row_per_method(setting):
    out, rows = _table("--rounds", "3", "--batch", "4", "--methods", *METHODS, *setting)
    assert list(rows) == METHODS, out
    assert rows["sam"][2].startswith("1.00 (1.00–1.00)")
    for name, (_, ms, ratio, faults) in rows.items():
        assert float(ms) > 0 and float(ratio.split()[0]) > 0, name
        assert int(faults) >= 0
    assert ("one process per method" in out) == bool(setting)


def test_crr_vs_sam_refuses_methods_without_sam():
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "crr_vs_sam.py"),
            "--methods",
            "crr",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert result.returncode != 0 and "must include sam" in result.stderr
