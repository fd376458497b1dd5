"""Training end to end on generated sample data: the run directory, resume, the CLI, bad input."""

import json

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from conftest import TINY
from retrieval.cli import app
from retrieval.errors import RetrievalError
from retrieval.run import mining_epochs, read_metrics, read_mining_log
from retrieval.training import TrainConfig, train


@pytest.fixture(scope="module")
def trained(sample, tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "run"
    result = train(TrainConfig(data_dir=sample / "train", out=run, epochs=2, **TINY), progress=False)
    return run, result


def test_training_writes_the_run_directory_of_the_design(trained):
    run, result = trained
    for name in ("config.json", "model.safetensors", "model_last.safetensors", "checkpoint.pt", "metrics.jsonl", "val_distances.json"):
        assert (run / name).is_file(), name
    assert mining_epochs(run) == [1, 2]
    config = json.loads((run / "config.json").read_text())
    assert config["backbone"] == "resnet10t" and config["loss"] == "triplet" and config["miner"] == "semihard"
    assert set(config["train_classes"]).isdisjoint(config["val_classes"])
    assert len(config["val_classes"]) == 2 and config["versions"]["torch"] == torch.__version__


def test_metrics_have_one_row_per_epoch_after_the_untrained_baseline(trained):
    run, _ = trained
    rows = read_metrics(run)
    assert [r["epoch"] for r in rows] == [0, 1, 2]
    for row in rows[1:]:
        for key in ("loss", "recall_at_1", "map_at_r", "active_fraction", "seconds", "images_per_second"):
            assert isinstance(row[key], float), key
        assert 0 <= row["recall_at_1"] <= 1 and 0 <= row["active_fraction"] <= 1
        assert 0 <= row["violating_fraction"] <= 1  # of all valid triplets, not only the semihard ones
    assert rows[0]["violating_fraction"] is None
    assert set(rows[0]) == set(rows[1]) == set(rows[2])  # the untrained row has every key, null where nothing trained
    assert rows[0]["embedding_spread"] is None and rows[0]["train_seconds"] is None


def test_violating_fraction_counts_every_valid_triplet_of_the_epoch_inside_the_margin():
    from conftest import brute_is_negative
    from retrieval import mining
    from retrieval.training.totals import EpochTotals

    margin, totals, brute = 0.3, EpochTotals(5), [0, 0]
    generator = torch.Generator().manual_seed(3)
    for step in range(3):
        embeddings = torch.nn.functional.normalize(torch.randn(12, 4, generator=generator), dim=1)
        labels = torch.randint(0, 4, (12,), generator=generator)
        semihard = mining.TripletMiner("semihard", margin)(embeddings, labels).record
        totals.add(0.1, 12, semihard, embeddings)  # the semihard record counts every valid triplet too
        d = torch.cdist(embeddings.double(), embeddings.double())
        negative = brute_is_negative(labels.tolist())
        for a in range(12):
            for p in range(12):
                if p == a or labels[p] != labels[a]:
                    continue
                for n in range(12):
                    if negative(a, n):
                        brute[0] += 1
                        brute[1] += int(d[a, n] < d[a, p] + margin)
    assert totals.valid == brute[0] and totals.violating_fraction == pytest.approx(brute[1] / brute[0], abs=1e-9)
    assert totals.active_fraction == 1.0  # what a semihard miner's own record always says


def test_with_the_all_miner_the_violating_fraction_is_the_active_fraction(sample, tmp_path):
    train(TrainConfig(data_dir=sample / "train", out=tmp_path / "all", epochs=1, miner="all", **TINY), progress=False)
    row = read_metrics(tmp_path / "all")[1]
    assert row["violating_fraction"] == pytest.approx(row["active_fraction"], rel=1e-9)


def test_mining_log_holds_hardest_distinct_triplets_with_paths(trained, sample):
    run, _ = trained
    rows = read_mining_log(run, 1)
    assert 0 < len(rows) <= 2 * 10  # the 10 hardest of every valid triplet and the 10 hardest mined
    gaps = [r["d_an_minus_d_ap"] for r in rows]
    assert gaps == sorted(gaps)
    triplets = [(r["anchor_path"], r["positive_path"], r["negative_path"]) for r in rows]
    assert len(set(triplets)) == len(triplets) and all(isinstance(r["mined"], bool) for r in rows)
    for mined in (True, False):  # within the miner's triplets and within the others, one per image pair
        pairs = [frozenset((r["anchor_path"], r["negative_path"])) for r in rows if r["mined"] is mined]
        assert len(set(pairs)) == len(pairs)
    for r in rows:
        assert r["anchor_label"] == r["positive_label"] != r["negative_label"]
        assert abs(r["d_an"] - r["d_ap"] - r["d_an_minus_d_ap"]) < 1e-6
        assert isinstance(r["batch"], int) and r["batch"] >= 1  # the epoch's step it was met in
        for role in ("anchor", "positive", "negative"):
            path = sample / "train" / r[f"{role}_path"]
            assert path.is_file() and path.parent.name == r[f"{role}_label"]


def test_ctrl_c_then_resume_equals_an_uninterrupted_run(sample, tmp_path):
    import signal

    straight = tmp_path / "straight"
    train(TrainConfig(data_dir=sample / "train", out=straight, epochs=3, **TINY), progress=False)

    def press_ctrl_c_after_epoch_2(row):
        if row["epoch"] == 2:
            signal.raise_signal(signal.SIGINT)

    resumed = tmp_path / "resumed"
    first = train(TrainConfig(data_dir=sample / "train", out=resumed, epochs=3, **TINY), progress=False,
                  on_epoch=press_ctrl_c_after_epoch_2)
    assert first.interrupted and [r["epoch"] for r in read_metrics(resumed)] == [0, 1, 2]
    train(TrainConfig(data_dir=sample / "train", out=resumed, epochs=3, resume=True, **TINY), progress=False)
    a = load_file(str(straight / "model_last.safetensors"))
    b = load_file(str(resumed / "model_last.safetensors"))
    for name in a:
        assert torch.allclose(a[name], b[name], atol=1e-6, rtol=0), name
    assert [r["epoch"] for r in read_metrics(resumed)] == [0, 1, 2, 3]
    assert read_metrics(resumed)[3]["loss"] == pytest.approx(read_metrics(straight)[3]["loss"], abs=1e-6)
    assert read_mining_log(resumed, 3) == read_mining_log(straight, 3)


def test_zero_epochs_writes_the_untrained_baseline(sample, tmp_path):
    result = train(TrainConfig(data_dir=sample / "train", out=tmp_path / "base", epochs=0, **TINY), progress=False)
    assert (tmp_path / "base" / "model.safetensors").is_file()
    assert [r["epoch"] for r in result.history] == [0]


def test_starting_over_an_existing_run_needs_resume(trained, sample):
    run, _ = trained
    with pytest.raises(RetrievalError, match="--resume"):
        train(TrainConfig(data_dir=sample / "train", out=run, epochs=1, **TINY), progress=False)


@pytest.mark.parametrize(
    "loss, miner",
    [("contrastive", None), ("contrastive", "pair-active"), ("lifted", None), ("npair", None), ("nce", None),
     ("infonce", None), ("triplet", "batch-hard")],
)
def test_every_objective_trains_one_epoch(sample, tmp_path, loss, miner):
    config = TrainConfig(data_dir=sample / "train", out=tmp_path / loss, epochs=1, loss=loss, miner=miner, val_fraction=0.0,
                         **{k: v for k, v in TINY.items() if k != "val_fraction"})
    result = train(config, progress=False)
    assert result.history[-1]["loss"] >= 0 and mining_epochs(tmp_path / loss) == [1]
    rows = read_mining_log(tmp_path / loss, 1)
    assert rows, "every objective logs its hardest triplets"
    if miner is None and loss == "npair":  # it trains on 2 of each class's 3 images: the third's triplets are unused
        assert {row["mined"] for row in rows} == {True, False}
    elif miner is None:  # the whole batch is used
        assert all(row["mined"] for row in rows)


def test_cli_train_evaluate_and_mining_end_to_end(sample, tmp_path):
    runner = CliRunner()
    run = tmp_path / "cli-run"
    out = runner.invoke(app, ["train", str(sample / "train"), "--out", str(run), "--epochs", "1", "--backbone", "resnet10t",
                              "--image-size", "32", "--embedding-dim", "16", "-P", "4", "-K", "2", "--quiet", "--workers", "1"])
    assert out.exit_code == 0, out.output
    assert "epoch 1:" in out.output and "next: retrieval index" in out.output
    out = runner.invoke(app, ["evaluate", str(run), str(sample / "test"), "--json"])
    assert out.exit_code == 0, out.output
    metrics = json.loads(out.stdout)
    assert metrics["n_queries"] == 18 and 0 <= metrics["map_at_r"] <= 1
    out = runner.invoke(app, ["evaluate", str(run), "--query", str(sample / "test"), "--gallery", str(sample / "catalog"), "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout)["n_queries"] == 18
    out = runner.invoke(app, ["mining", str(run), "--top", "3", "--json"])
    assert out.exit_code == 0, out.output
    mined = json.loads(out.stdout)
    assert mined["epoch"] == 1 and len(mined["triplets"]) == 3
    assert all(abs(t["margin_violation"] - (mined["margin"] - t["d_an_minus_d_ap"])) < 1e-9 for t in mined["triplets"])
    out = runner.invoke(app, ["mining", str(run), "--top", "2"])
    assert out.exit_code == 0 and "violation" in out.output


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "{missing}", "--out", "{run}"], "not found"),
        (["train", "{empty}", "--out", "{run}"], "no"),
        (["train", "{data}", "--out", "{run}", "--backbone", "resnet_nope"], "unknown backbone"),
        (["train", "{data}", "--out", "{run}", "--loss", "magic"], "unknown loss"),
        (["train", "{data}", "--out", "{run}", "--miner", "magic"], "unknown miner"),
        (["train", "{data}", "--out", "{run}", "-K", "1"], "images-per-class"),
        (["train", "{data}", "--out", "{run}", "--val-fraction", "1.5"], "val-fraction"),
        (["train", "{data}", "--out", "{run}", "--lr", "-1"], "--lr"),
        (["train", "{data}", "--out", "{run}", "--workers", "-1"], "--workers"),
        (["train", "{data}", "--out", "{run}", "--resume"], "does not exist"),
        (["evaluate", "{run}", "{data}"], "not found"),
        (["mining", "{missing}"], "not found"),
    ],
)
def test_bad_input_gives_one_line_and_nonzero_exit(sample, tmp_path, args, message):
    import subprocess
    import sys

    (tmp_path / "empty").mkdir()
    values = {"missing": tmp_path / "missing", "empty": tmp_path / "empty", "run": tmp_path / "run", "data": sample / "train"}
    argv = [a.format(**values) for a in args]
    done = subprocess.run([sys.executable, "-m", "retrieval", *argv], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    lines = [l for l in done.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], done.stderr


def test_a_run_on_greyscale_images_only_records_it_and_evaluates_colour_images_as_grey(sample, tmp_path):
    """data_config["greyscale"] when every image of DATA_DIR is stored grey; a colour folder gets no key."""
    from PIL import Image

    from retrieval.data import build_transforms
    from retrieval.run import load_model

    grey_dir = tmp_path / "grey"
    for path in sorted((sample / "train").rglob("*.png")):
        target = grey_dir / path.relative_to(sample / "train")
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.open(path).convert("L").save(target)
    train(TrainConfig(data_dir=grey_dir, out=tmp_path / "grey_run", epochs=0, **TINY), progress=False)
    model, config = load_model(tmp_path / "grey_run")
    assert config.data_config["greyscale"] is True
    colour_image = Image.open(next((sample / "test").rglob("*.png"))).convert("RGB")
    transform = build_transforms(config.data_config, train=False)
    assert torch.allclose(transform(colour_image), transform(colour_image.convert("L").convert("RGB")), atol=0.05)
    train(TrainConfig(data_dir=sample / "train", out=tmp_path / "colour_run", epochs=0, **TINY), progress=False)
    assert "greyscale" not in load_model(tmp_path / "colour_run")[1].data_config


def test_ctrl_c_in_the_first_epoch_of_a_new_run_does_not_advise_a_resume_that_cannot_work(sample, tmp_path, monkeypatch, caplog):
    """Stopped before any epoch ended there is no checkpoint: the warning says to start again (with
    --force), not to --resume, and the command does not claim a run was written."""
    import logging
    import signal

    from retrieval.run.checkpoint import has_checkpoint
    from retrieval.training import loop

    step = loop._train_step

    def ctrl_c_at_the_first_step(*args, **kwargs):
        signal.raise_signal(signal.SIGINT)
        return step(*args, **kwargs)

    monkeypatch.setattr(loop, "_train_step", ctrl_c_at_the_first_step)
    out = tmp_path / "run"
    with caplog.at_level(logging.WARNING, logger="retrieval"):
        result = train(TrainConfig(data_dir=sample / "train", out=out, epochs=3, **TINY), progress=False)
    assert result.interrupted and not result.resumable and not has_checkpoint(out)
    (warned,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("interrupted")]
    assert "nothing to resume from" in warned and "--force" in warned and "--resume" not in warned, warned
    shown = CliRunner().invoke(app, ["train", str(sample / "train"), "--out", str(tmp_path / "cli"), "--epochs", "2",
                                     "--backbone", "resnet10t", "--image-size", "32", "--embedding-dim", "16",
                                     "--workers", "0", "--precision", "fp32", "--quiet"])
    assert shown.exit_code == 130 and "Run written" not in shown.output, shown.output


def test_ctrl_c_is_handled_by_the_training_process_alone_not_by_forked_loader_workers(capsys):
    """A terminal's Ctrl-C reaches the data-loader workers too, forked with the handler: each printed
    "stopping after this step" (three lines for two workers). Only the process that set it answers."""
    import multiprocessing
    import signal

    from retrieval.training.progress import InterruptFlag

    with InterruptFlag() as flag:
        context = multiprocessing.get_context("fork")
        handler = signal.getsignal(signal.SIGINT)
        child = context.Process(target=lambda: [handler(signal.SIGINT, None) for _ in range(2)])  # twice: would abort
        child.start()
        child.join()
        assert child.exitcode == 0, "the worker ignores it (no KeyboardInterrupt, no message)"
        assert not flag.requested
        signal.getsignal(signal.SIGINT)(signal.SIGINT, None)
        assert flag.requested
    assert capsys.readouterr().err.count("stopping after this step") == 1


def test_resuming_with_fewer_epochs_than_planned_warns_that_the_schedule_is_squeezed_only_when_it_trains_on(sample, tmp_path,
                                                                                                              caplog):
    """Stopped at epoch 1 of 3 and resumed with --epochs 2, the learning rate fell to 0 in one epoch without a word;
    a finished run resumed with fewer epochs trains nothing and gets only "already trained"."""
    import logging
    import signal

    def press_ctrl_c_after_epoch_1(row):
        if row["epoch"] == 1:
            signal.raise_signal(signal.SIGINT)

    run = tmp_path / "run"
    train(TrainConfig(data_dir=sample / "train", out=run, epochs=3, **TINY), progress=False, on_epoch=press_ctrl_c_after_epoch_1)
    with caplog.at_level(logging.WARNING, logger="retrieval"):
        train(TrainConfig(data_dir=sample / "train", out=run, epochs=2, resume=True, **TINY), progress=False)
    (warned,) = [r.getMessage() for r in caplog.records if "planned for" in r.getMessage()]
    assert warned.startswith("--epochs 2 is below the 3 this run was planned for: its cosine schedule now ends at epoch 2")
    assert [r["epoch"] for r in read_metrics(run)] == [0, 1, 2]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="retrieval"):
        train(TrainConfig(data_dir=sample / "train", out=run, epochs=1, resume=True, **TINY), progress=False)
    assert not [r for r in caplog.records if "planned for" in r.getMessage()], "a finished run: nothing is squeezed"
    assert any("already trained for 2 epochs" in r.getMessage() for r in caplog.records)
