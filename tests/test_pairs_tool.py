"""``python tools/pairs_from_labels.py``: the benchmark's pair file from a labelled folder; bad input is
one line (argparse's ``usage`` and ``error: …``) with exit status 2, never a traceback."""

import csv
import json
import runpy
import sys
from pathlib import Path

import pytest

import fake_runs

TOOL = Path(__file__).resolve().parents[1] / "tools" / "pairs_from_labels.py"


def run_tool(monkeypatch, capsys, *args) -> tuple[int, str, str]:
    """The tool as a script (``__main__``) in this process: exit status, stdout, stderr."""
    monkeypatch.setattr(sys, "argv", [str(TOOL), *map(str, args)])
    capsys.readouterr()
    try:
        runpy.run_path(str(TOOL), run_name="__main__")
        code = 0
    except SystemExit as exit:
        code = exit.code or 0
    out, err = capsys.readouterr()
    return code, out, err


def test_the_tool_writes_the_kept_same_class_pairs(monkeypatch, capsys, tmp_path):
    data = fake_runs.make_gallery(tmp_path / "data", images_per_class=4)
    out = tmp_path / "pairs.csv"
    code, stdout, stderr = run_tool(monkeypatch, capsys, data, "--fraction", "0.5", "--out", out)
    assert code == 0, stderr
    rows = list(csv.reader(out.read_text().splitlines()))
    assert rows[0] == ["image_a", "image_b"] and len(rows) - 1 == json.loads(stdout)["pairs"] == 3 * len(fake_runs.CLASSES)
    assert all(Path(a).parent == Path(b).parent for a, b in rows[1:])  # same class only


@pytest.mark.parametrize("fraction", ["0", "2", "-0.5", "nan"])
def test_a_fraction_outside_0_1_is_one_error_line(monkeypatch, capsys, tmp_path, fraction):
    data = fake_runs.make_gallery(tmp_path / "data", images_per_class=2)
    code, stdout, stderr = run_tool(monkeypatch, capsys, data, "--fraction", fraction, "--out", tmp_path / "pairs.csv")
    assert code == 2 and stdout == ""
    assert "Traceback" not in stderr
    (error,) = [line for line in stderr.splitlines() if "error:" in line]
    assert "--fraction must be in (0, 1]" in error
    assert not (tmp_path / "pairs.csv").exists()


def test_a_missing_folder_is_one_error_line(monkeypatch, capsys, tmp_path):
    code, stdout, stderr = run_tool(monkeypatch, capsys, tmp_path / "nowhere", "--out", tmp_path / "pairs.csv")
    assert code == 2 and "Traceback" not in stderr
    (error,) = [line for line in stderr.splitlines() if "error:" in line]
    assert "nowhere" in error
