"""``benchmarks/_report.write_section``: a benchmark's ``--write`` replaces its section of
BENCHMARKS.md and keeps the hand-written readings inside it."""

from __future__ import annotations

from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def write_section(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    from _report import write_section

    return write_section


def test_a_section_is_replaced_and_the_text_around_it_kept(tmp_path, write_section):
    path = tmp_path / "BENCHMARKS.md"
    path.write_text("# Benchmarks\n\nbefore\n\n<!-- x:start -->\nold figures\n<!-- x:end -->\n\nafter\n")
    write_section("x", "new figures", path)
    assert path.read_text() == "# Benchmarks\n\nbefore\n\n<!-- x:start -->\nnew figures\n<!-- x:end -->\n\nafter\n"
    assert not path.with_suffix(".md.tmp").exists()


def test_hand_written_readings_inside_the_section_survive_a_rewrite(tmp_path, write_section):
    readings = "<!-- x:readings:start -->\nReading (an earlier run): 12 ms, with \\1 and $1 kept as typed.\n<!-- x:readings:end -->"
    path = tmp_path / "BENCHMARKS.md"
    path.write_text(f"<!-- x:start -->\nold figures\n\n{readings}\n<!-- x:end -->\n<!-- y:start -->\nother\n<!-- y:end -->\n")
    write_section("x", "new figures", path)
    text = path.read_text()
    assert "old figures" not in text and f"<!-- x:start -->\nnew figures\n\n{readings}\n<!-- x:end -->" in text
    assert "<!-- y:start -->\nother\n<!-- y:end -->" in text
    write_section("y", "other, again", path)  # another section's readings markers are not this one's
    assert readings in path.read_text() and "other, again" in path.read_text()


def test_a_missing_section_is_appended(tmp_path, write_section):
    path = tmp_path / "BENCHMARKS.md"
    path.write_text("# Benchmarks\n")
    write_section("z", "figures", path)
    assert path.read_text() == "# Benchmarks\n\n<!-- z:start -->\nfigures\n<!-- z:end -->\n"
