"""`retrieval mining`: the logged hardest first with whether the miner kept them, --mined-only,
--class (an unknown one is a one-line error naming close ones), --json, runs written before
`mined` was logged, and a table that stays one line a row at 100 columns."""

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

import fake_runs
from retrieval.cli import app

LONG = "Arla-Ecological-Medium-Fat-Milk"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    gallery = fake_runs.make_gallery(tmp_path_factory.mktemp("gallery"))
    root = tmp_path_factory.mktemp("runs")
    new = fake_runs.make_run(root / "new", gallery, index=False)
    old = fake_runs.make_run(root / "old", gallery, index=False, mined=False, confusions=False)
    return new, old


def mining(*args, columns=100):
    out = CliRunner().invoke(app, ["mining", *map(str, args)], env={"COLUMNS": str(columns)})
    assert out.exit_code == 0, out.output
    return out.stdout


def as_json(*args):
    return json.loads(mining(*args, "--json"))


def test_json_lists_the_hardest_first_with_whether_the_miner_kept_each(runs):
    new, _ = runs
    result = as_json(new)
    assert result["epoch"] == 3 and result["miner"] == "semihard" and result["mined_recorded"] is True
    gaps = [t["d_an_minus_d_ap"] for t in result["triplets"]]
    assert gaps == sorted(gaps) and [t["mined"] for t in result["triplets"]] == [True, False, True]
    assert all(t["margin_violation"] == pytest.approx(0.2 - t["d_an_minus_d_ap"]) for t in result["triplets"])


def test_mined_only_keeps_the_miners_triplets_and_class_keeps_anchor_or_negative_of_it(runs):
    new, _ = runs
    assert [t["mined"] for t in as_json(new, "--mined-only")["triplets"]] == [True, True]
    apple = as_json(new, "--class", "apple")["triplets"]
    assert len(apple) == 2 and all("apple" in (t["anchor_label"], t["negative_label"]) for t in apple)
    assert [t["anchor_label"] for t in as_json(new, "--class", "apple", "--mined-only")["triplets"]] == ["banana"]
    assert len(as_json(new, "--epoch", "1", "--top", "1")["triplets"]) == 1


def test_an_unknown_class_is_a_one_line_error_naming_close_ones(runs):
    new, _ = runs
    out = subprocess.run([sys.executable, "-m", "retrieval.cli", "mining", str(new), "--class", "chery"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and out.stderr.count("\n") == 1
    assert "no class 'chery'" in out.stderr and "cherry" in out.stderr and "Traceback" not in out.stderr


def test_a_run_written_before_mined_was_logged_loads_and_says_not_recorded(runs):
    _, old = runs
    result = as_json(old)
    assert result["mined_recorded"] is False and all("mined" not in t for t in result["triplets"])
    assert len(as_json(old, "--mined-only")["triplets"]) == 3  # its log held only the miner's triplets
    table = mining(old)
    assert "not recorded" in table and "violation" in table


def test_the_table_keeps_one_line_per_role_at_100_columns_with_long_labels_and_paths(runs, tmp_path):
    import shutil

    new, _ = runs
    run = shutil.copytree(new, tmp_path / "long")
    rows = [json.loads(line) for line in (run / "mining" / "epoch_003.jsonl").read_text().splitlines()]
    for row in rows:
        for role in ("anchor", "positive", "negative"):
            row[f"{role}_label"] = f"{LONG}-{row[f'{role}_label']}"
            row[f"{role}_path"] = f"{LONG}/a/deep/folder/{LONG}_IMG_20190101_{role}.jpg"
    (run / "mining" / "epoch_003.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    lines = mining(run).splitlines()
    assert max(len(line.rstrip()) for line in lines) <= 100
    numbered = [line for line in lines if line.lstrip()[:2] in ("1 ", "2 ", "3 ")]
    assert len(numbered) == 3  # one first line per triplet: nothing wrapped into extra rows
    assert all("…" in line and line.rstrip().endswith(("yes", "no")) for line in numbered)
    assert sum(1 for line in lines if f"{LONG}_IMG" in line or "…" in line) == 2 * 3  # a class line and a file line each


def _with_config(run, tmp_path, **changes):
    """A copy of ``run`` whose config.json has ``changes``."""
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run, copy, symlinks=True)
    config = (copy / "config.json").resolve()
    config.write_text(json.dumps({**json.loads(config.read_text()), **changes}))
    return copy


def test_a_validation_class_is_told_it_was_held_out(runs, tmp_path):
    run = _with_config(runs[0], tmp_path, val_classes=["kiwi"])
    out = CliRunner().invoke(app, ["mining", str(run), "--class", "kiwi"])
    assert out.exit_code != 0 and "'kiwi' is a validation class of this run" in str(out.exception)
    typo = CliRunner().invoke(app, ["mining", str(run), "--class", "kiwj"])  # the nearest name is the held-out one
    assert typo.exit_code != 0 and "did you mean kiwi (a validation class: none of it logged)?" in str(typo.exception)


@pytest.mark.parametrize("mode", ["unlabelled", "pairs"])
def test_class_is_refused_on_a_run_trained_without_class_labels(runs, tmp_path, mode):
    run = _with_config(runs[0], tmp_path, mode=mode)
    out = CliRunner().invoke(app, ["mining", str(run), "--class", "apple"])
    assert out.exit_code != 0 and f"trained without class labels (--{mode})" in str(out.exception)


def test_a_loss_without_a_margin_is_not_said_to_have_one_and_an_empty_log_is_not_blamed_on_filters(runs, tmp_path):
    run = _with_config(runs[0], tmp_path, loss="infonce")
    text = " ".join(mining(run, "--epoch", "3").split())  # the title may wrap
    assert "loss infonce: no margin (ε 0.2 a yardstick)" in text and "inside the margin" not in text
    (run / "mining" / "epoch_003.jsonl").write_text("")
    empty = mining(run, "--epoch", "3")
    assert "epoch 3 logged no triplet" in empty and "passes the filters" not in empty


def test_the_title_is_a_line_of_its_own_that_does_not_wrap_at_the_tables_width(runs):
    new, _ = runs
    first = mining(new, "--mined-only", "--class", "apple", columns=150).splitlines()[0]
    assert first == "epoch 3: hardest triplets, mined only, class apple · miner semihard, margin ε 0.2", first


@pytest.mark.parametrize("loss", ["triplet", "infonce"])
def test_at_80_columns_every_line_under_the_title_fits(runs, tmp_path, loss):
    """The legend under the table was one 85-character line (about 120 for a loss without a margin)."""
    import shutil

    _, old = runs  # its "mined: not recorded" line too
    run = shutil.copytree(old, tmp_path / "run")
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "loss": loss}))
    lines = mining(run, columns=80).splitlines()
    assert "not recorded" in " ".join(lines) and "whether the miner kept the triplet" in " ".join(lines)
    assert all(len(line) <= 80 for line in lines[1:]), [line for line in lines[1:] if len(line) > 80]
