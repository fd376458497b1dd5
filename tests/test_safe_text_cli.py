"""Class names and paths from files printed by the real command line (in process through
``retrieval.cli.main``): as text, never read as Rich markup, and no control character reaches the terminal."""

import json
import shutil

import pytest

import fake_runs
from cli_runner import cli  # noqa: F401

CLASSES = ("[sale] shoes", "shoes[", "t\x1b]0;pwned\x07x", "plain")


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory):
    """A gallery whose class folders and file names hold markup and an escape sequence (``shoes[/dim].png``
    is the file ``dim].png`` in the class ``shoes[``), its index, and a mining log naming them."""
    root = tmp_path_factory.mktemp("hostile")
    gallery = fake_runs.make_gallery(root / "gallery", classes=CLASSES)
    shutil.move(gallery / "shoes[" / "shoes[_0.png", gallery / "shoes[" / "dim].png")
    run = fake_runs.make_run(root / "run", gallery, mining=False, metrics=False, val_distances=False)
    (run / "mining").mkdir()
    row = {"epoch": 1, "anchor_path": "shoes[/dim].png", "anchor_label": "shoes[", "positive_path": "shoes[/shoes[_1.png",
           "positive_label": "shoes[", "negative_path": "t\x1b]0;pwned\x07x/t\x1b]0;pwned\x07x_1.png",
           "negative_label": "t\x1b]0;pwned\x07x", "d_ap": 0.5, "d_an": 0.4, "d_an_minus_d_ap": -0.1}
    (run / "mining" / "epoch_001.jsonl").write_text(json.dumps(row) + "\n")
    return run, gallery


def test_search_prints_labels_and_paths_as_text_without_control_characters(hostile_run, cli):
    run, gallery = hostile_run
    result = cli("search", run, gallery / "shoes[" / "dim].png", "-k", "16", "--device", "cpu")
    assert result.code == 0, result.err
    assert "\x1b" not in result.out and "\x07" not in result.out
    assert "[sale] shoes" in result.out and "shoes[/dim].png" in result.out  # not eaten as a tag, no MarkupError
    assert "t\\x1b]0;pwned\\x07x" in result.out  # the escape sequence shown, not sent


def test_mining_prints_labels_and_paths_as_text(hostile_run, cli):
    run, _ = hostile_run
    result = cli("mining", run)
    assert result.code == 0, result.err
    assert "shoes[" in result.out and "dim].png" in result.out and "\x1b" not in result.out and "t\\x1b]0;p" in result.out  # escaped (the column may cut the rest)


def test_warnings_and_errors_naming_a_file_show_its_control_characters_escaped(hostile_run, tmp_path, cli):
    run, _ = hostile_run
    data = fake_runs.make_gallery(tmp_path / "data", classes=("a", "c"))
    (data / "c" / "bad\x1b[31m.png").write_bytes(b"not a png")
    result = cli("evaluate", run, data, "--json", "--device", "cpu")
    assert result.code == 0, result.err
    assert "bad\\x1b[31m.png" in result.err and "\x1b" not in result.err  # the scan's warning line
    result = cli("search", run, tmp_path / "missing\x1b[2J.png")
    assert result.code == 2 and result.err.count("\n") == 1 and "missing\\x1b[2J.png" in result.err and "\x1b" not in result.err

