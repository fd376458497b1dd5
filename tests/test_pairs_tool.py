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


def test_paths_with_a_comma_or_a_leading_hash_are_written_so_that_training_reads_them(monkeypatch, capsys, tmp_path):
    from retrieval.data.side_files import read_csv_rows

    data = tmp_path / "data"
    for name in ("red,star", "#blue"):
        (data / name).mkdir(parents=True)
    fake_runs.make_gallery(tmp_path / "made", images_per_class=2)
    images = sorted((tmp_path / "made").rglob("*.png"))[:4]
    for k, image in enumerate(images):
        target = data / ("red,star" if k < 2 else "#blue") / image.name
        target.write_bytes(image.read_bytes())
    out = tmp_path / "pairs.csv"
    code, _, stderr = run_tool(monkeypatch, capsys, data, "--fraction", "1", "--out", out)
    assert code == 0, stderr
    rows = [fields for _, fields in read_csv_rows(out)][1:]  # as training reads it: no row lost to a comma or a "#"
    assert sorted(Path(a).parent.name for a, _ in rows) == ["#blue", "red,star"] and all(len(r) == 2 for r in rows)


@pytest.mark.parametrize("where", ["folder", "missing parent"])
def test_an_out_that_is_a_folder_or_in_a_missing_folder_is_one_error_line(monkeypatch, capsys, tmp_path, where):
    data = fake_runs.make_gallery(tmp_path / "data", images_per_class=2)
    out = data if where == "folder" else tmp_path / "nowhere" / "pairs.csv"
    code, _, stderr = run_tool(monkeypatch, capsys, data, "--fraction", "1", "--out", out)
    assert code == 2 and "Traceback" not in stderr
    (error,) = [line for line in stderr.splitlines() if "error:" in line]
    assert "--out" in error
