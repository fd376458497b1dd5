"""The ``--out`` folder and ``--resume`` through the real CLI (retrieval.training.out_folder and
retrieval.training.resume): a new run never replaces a folder's files unasked; a resume refuses the
flags it would ignore, finds its data from any working directory, and records what took effect."""

import json
import os
import shutil

import pytest

from cli_runner import cli  # noqa: F401 (fixture)
from retrieval.run import read_config

TINY_FLAGS = ["--backbone", "resnet10t", "--image-size", "32", "--embedding-dim", "16", "-P", "4", "-K", "2",
              "--workers", "0", "--precision", "fp32", "--val-fraction", "0.25", "--quiet"]


@pytest.fixture(scope="module")
def base_run(sample, tmp_path_factory):
    """An untrained run (``--epochs 0``: model, config and checkpoint), started by the CLI."""
    import subprocess
    import sys

    run = tmp_path_factory.mktemp("runs") / "base"
    done = subprocess.run([sys.executable, "-m", "retrieval", "train", str(sample / "train"), "--out", str(run), "--epochs", "0",
                           *TINY_FLAGS], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return run


def _copy(run, target):
    shutil.copytree(run, target, symlinks=True)
    return target


def _files(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ----------------------------------------------------------------------------- --out


def test_a_folder_with_other_files_is_refused_untouched_unless_forced(tmp_path, sample, cli):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "config.json").write_text('{"theme": "dark"}')  # another program's config
    (out / "metrics.jsonl").write_text("my numbers\n")
    (out / "notes.txt").write_text("keep me")
    before = _files(out)
    done = cli("train", sample / "train", "--out", out, "--epochs", "0", *TINY_FLAGS)
    assert done.code == 2 and len(done.lines) == 1, done.err
    assert "is not empty (config.json, metrics.jsonl, notes.txt) and is not a run" in done.lines[0] and "--force" in done.lines[0]
    assert _files(out) == before

    forced = cli("train", sample / "train", "--out", out, "--epochs", "0", "--force", *TINY_FLAGS)
    assert forced.code == 0, forced.err
    assert (out / "notes.txt").read_text() == "keep me" and read_config(out).backbone == "resnet10t"


def test_a_run_without_its_checkpoint_is_refused_and_force_replaces_it(tmp_path, base_run, sample, cli):
    out = _copy(base_run, tmp_path / "run")
    (out / "checkpoint.pt").unlink()
    (out / "mining").mkdir(exist_ok=True)
    (out / "mining" / "epoch_007.jsonl").write_text("{}\n")
    done = cli("train", sample / "train", "--out", out, "--epochs", "0", *TINY_FLAGS)
    assert done.code == 2 and "holds a run without its checkpoint.pt" in done.lines[0]
    assert (out / "mining" / "epoch_007.jsonl").exists()
    assert cli("train", sample / "train", "--out", out, "--epochs", "0", "--force", *TINY_FLAGS).code == 0
    assert not (out / "mining" / "epoch_007.jsonl").exists()  # the earlier run's log is not mixed into the new one


def test_force_removes_the_earlier_runs_index_and_keeps_its_face_cache(tmp_path, base_run, sample, cli):
    out = _copy(base_run, tmp_path / "run")
    assert cli("index", out, sample / "test", "--quiet").code == 0 and (out / "index").is_dir()
    (out / "faces").mkdir()
    (out / "faces" / "kept.json").write_text("{}")  # stands for a face run's detection cache
    assert cli("train", sample / "train", "--out", out, "--epochs", "0", "--force", "--seed", "1", *TINY_FLAGS).code == 0
    assert not (out / "index").exists()  # the earlier model's embeddings: search would refuse them
    assert (out / "faces" / "kept.json").exists()
    searched = cli("search", out, next((sample / "test").rglob("*.png")))
    assert searched.code == 2 and "has no gallery index yet" in searched.err, searched.err


def test_force_with_a_typo_leaves_the_earlier_run_as_it_was(tmp_path, base_run, sample, cli):
    """--force replaced the earlier run before anything was checked: a mistyped DATA_DIR, a missing
    weights file or an unknown backbone deleted a trained model and then failed. The earlier run now
    goes only once the new one's data, model and weights are built."""
    out = _copy(base_run, tmp_path / "run")
    before = _files(out)
    (tmp_path / "broken.safetensors").write_bytes(b"not safetensors")
    typos = {
        "DATA_DIR": ["train", tmp_path / "trian", "--out", out, "--epochs", "0", "--force", *TINY_FLAGS],
        "--weights": ["train", sample / "train", "--out", out, "--epochs", "0", "--force", *TINY_FLAGS,
                      "--weights", tmp_path / "broken.safetensors"],
        "--backbone": ["train", sample / "train", "--out", out, "--epochs", "0", "--force", *TINY_FLAGS, "--backbone", "resnet9000"],
    }
    for what, args in typos.items():
        done = cli(*args)
        assert done.code == 2 and done.lines[-1].startswith("error: "), (what, done.err)
        assert _files(out) == before, f"a failed --force ({what}) removed the earlier run's files"
    replaced = cli("train", sample / "train", "--out", out, "--epochs", "0", "--force", *TINY_FLAGS, "--seed", "3")
    assert replaced.code == 0 and read_config(out)["train_settings"]["seed"] == 3, replaced.err


def test_a_run_with_its_checkpoint_needs_resume_and_resume_with_force_is_refused(base_run, sample, cli):
    done = cli("train", sample / "train", "--out", base_run, "--epochs", "0", *TINY_FLAGS)
    assert done.code == 2 and "already holds a run; pass --resume" in done.lines[0]
    both = cli("train", sample / "train", "--out", base_run, "--resume", "--force")
    assert both.code == 2 and "not both" in both.lines[0]
    assert "resuming" not in both.out, "refused before the line that announces a resume"


def test_stale_temporaries_of_a_killed_run_are_removed_when_it_resumes(tmp_path, base_run, sample, cli):
    out = _copy(base_run, tmp_path / "run")
    (out / ".metrics.jsonl.3f2a.tmp").write_text("half")
    (out / "mining").mkdir(exist_ok=True)
    (out / "mining" / ".epoch_001.jsonl.9c.tmp").write_text("half")
    done = cli("train", sample / "train", "--out", out, "--resume", "--epochs", "0")
    assert done.code == 0, done.err
    assert not list(out.rglob("*.tmp")) and not (out / ".lock").exists()


# ----------------------------------------------------------------------------- --resume


def test_resume_refuses_typed_flags_that_contradict_the_run_naming_each(base_run, sample, cli):
    before = _files(base_run)
    done = cli("train", sample / "train", "--out", base_run, "--resume", "--lr", "0.5", "--loss", "contrastive",
               "--backbone", "resnet18", "-P", "4", "--epochs", "3")
    assert done.code == 2 and len(done.lines) == 1, done.err
    line = done.lines[0]
    for flag in ("--lr 0.5 (the run has 0.001)", "--loss contrastive (the run has triplet)", "--backbone resnet18 (the run has resnet10t)"):
        assert flag in line
    named = line.split(": drop")[0]
    assert "-P 4" not in named and "--epochs 3" not in named  # the run's own value, and a flag a resume may change
    assert _files(base_run) == before
    weights = sample.parent / "w.safetensors"
    weights.write_bytes(b"")
    started_without = cli("train", sample / "train", "--out", base_run, "--resume", "--weights", weights)
    assert started_without.code == 2 and f"--weights {weights} (the run has none)" in started_without.lines[0], started_without.err


def test_resume_refuses_a_data_folder_other_than_the_runs(base_run, sample, cli):
    done = cli("train", sample / "test", "--out", base_run, "--resume")
    assert done.code == 2 and "DATA_DIR" in done.lines[0] and str((sample / "train").resolve()) in done.lines[0]
    assert "give the run's own DATA_DIR" in done.lines[0] and "drop" not in done.lines[0], "DATA_DIR cannot be dropped"
    both = cli("train", sample / "test", "--out", base_run, "--resume", "--flip-average")
    assert both.code == 2 and "--flip-average (the run has it off)" in both.lines[0], both.lines[0]  # not "--flip-average True"
    assert "drop that flag" in both.lines[0] and "give the run's own DATA_DIR" in both.lines[0]


def test_resume_from_another_working_directory_records_every_command_that_took_effect(tmp_path, base_run, sample, cli, monkeypatch):
    out = _copy(base_run, tmp_path / "run")
    settings = read_config(out)["train_settings"]
    assert settings["data_dir"] == str((sample / "train").resolve())  # absolute, whatever the working directory was
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    data = os.path.relpath(sample / "train", elsewhere)  # relative to this call's working directory, not the first's
    done = cli("train", data, "--out", "../run", "--resume", "--epochs", "1", "--workers", "0")
    assert done.code == 0, done.err
    config = read_config(out)
    assert config["train_settings"]["epochs"] == 1 and config["best_epoch"] in (0, 1)
    assert len(config["commands"]) == 2 and config["commands"][1].endswith("--out ../run --resume --epochs 1 --workers 0")
    assert "--epochs 0" in config["commands"][0]


def test_a_run_from_before_absolute_paths_resumes_on_config_jsons_data_dir(tmp_path, base_run, sample, cli, monkeypatch):
    out = _copy(base_run, tmp_path / "run")
    config = json.loads((out / "config.json").read_text())
    config["train_settings"]["data_dir"] = "data/train"  # as typed, relative to a working directory now unknown
    (out / "config.json").write_text(json.dumps(config))
    monkeypatch.chdir(tmp_path)
    done = cli("train", sample / "train", "--out", out, "--resume", "--epochs", "0")
    assert done.code == 0, done.err


def test_a_run_whose_data_moved_resumes_on_the_data_dir_given_if_it_holds_the_same_classes(tmp_path, base_run, sample, cli):
    out = _copy(base_run, tmp_path / "run")
    moved = shutil.copytree(sample / "train", tmp_path / "moved-train")
    config = json.loads((out / "config.json").read_text())
    config["train_settings"]["data_dir"] = config["data_dir"] = str(tmp_path / "gone")
    (out / "config.json").write_text(json.dumps(config))
    assert cli("train", moved, "--out", out, "--resume", "--epochs", "0").code == 0
    renamed = shutil.copytree(sample / "train", tmp_path / "renamed")
    first = sorted(p for p in renamed.iterdir() if p.is_dir())[0]
    first.rename(renamed / "a-class-the-run-never-saw")
    other = cli("train", renamed, "--out", out, "--resume", "--epochs", "0")
    assert other.code == 2 and "holds other classes" in other.lines[-1]


def test_resume_over_damaged_best_weights_saves_the_next_epoch_as_the_best_or_refuses_with_none_left(tmp_path, base_run, sample, cli):
    """model.safetensors (the weights search serves) damaged: a resume that trains on replaces them with its
    next epoch (said in a warning); one with no epoch left is refused rather than reported as written."""
    from retrieval.run import load_model

    out = _copy(base_run, tmp_path / "run")
    weights = (out / "model.safetensors").resolve()
    weights.write_bytes(weights.read_bytes()[:1000])  # truncated
    none_left = cli("train", sample / "train", "--out", out, "--resume", "--workers", "0", "--quiet")
    assert none_left.code == 2 and "weights are lost" in none_left.lines[-1] and "raise --epochs" in none_left.lines[-1], none_left.err
    resumed = cli("train", sample / "train", "--out", out, "--resume", "--epochs", "1", "--workers", "0", "--quiet")
    assert resumed.code == 0, resumed.err
    assert any("weights are lost, so the next epoch trained is saved as the best" in line for line in resumed.lines), resumed.err
    assert read_config(out)["best_epoch"] == 1
    load_model(out)  # the run serves again


def test_fp16_on_a_cpu_is_warned_of(tmp_path, sample, cli):
    flags = [("fp16" if flag == "fp32" else flag) for flag in TINY_FLAGS]
    done = cli("train", sample / "train", "--out", tmp_path / "run", "--epochs", "0", *flags, "--device", "cpu")
    assert done.code == 0, done.err
    assert any("--precision fp16 on cpu" in line and "without loss scaling" in line for line in done.lines), done.err


def test_ctrl_c_in_the_untrained_validation_leaves_a_start_that_every_message_says_to_force(tmp_path, sample, cli, monkeypatch):
    from retrieval.training import loop

    real_write = loop.write_baseline

    def write_then_stop(*args, **kwargs):  # Ctrl-C just after epoch 0's row is written, before training's own handling
        real_write(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(loop, "write_baseline", write_then_stop)
    out = tmp_path / "stopped"
    done = cli("train", sample / "train", "--out", out, "--epochs", "2", *TINY_FLAGS)
    assert done.code == 130, done.err
    assert any("interrupted before the first epoch" in line and "--force" in line for line in done.lines), done.err
    assert not any("Traceback" in line for line in done.lines)
    monkeypatch.undo()
    assert (out / "metrics.jsonl").exists() and not (out / "checkpoint.pt").exists()

    again = cli("train", sample / "train", "--out", out, "--epochs", "0", *TINY_FLAGS)
    assert again.code == 2 and "holds the start of a run that stopped before its first epoch ended" in again.lines[0], again.err
    assert "--force" in again.lines[0]
    resumed = cli("train", sample / "train", "--out", out, "--resume")
    assert resumed.code == 2 and "stopped before its first epoch ended" in resumed.lines[0] and "--force" in resumed.lines[0]
    assert cli("train", sample / "train", "--out", out, "--epochs", "0", "--force", *TINY_FLAGS).code == 0


def test_resume_of_a_folder_that_does_not_exist_says_so(tmp_path, sample, cli):
    done = cli("train", sample / "train", "--out", tmp_path / "nowhere", "--resume")
    assert done.code == 2 and f"{tmp_path / 'nowhere'} does not exist" in done.lines[0], done.err


def test_resuming_a_run_with_no_epoch_left_says_nothing_was_written(tmp_path, base_run, sample, cli):
    out = _copy(base_run, tmp_path / "done")
    before = _files(out)
    done = cli("train", sample / "train", "--out", out, "--resume", "--quiet")
    assert done.code == 0, done.err
    assert "already trained for 0 epochs" in done.err and f"Nothing left to train: {out} is as it was" in done.out
    assert "Run written" not in done.out and _files(out) == before


def test_a_resume_that_never_beats_the_best_epoch_is_still_recorded_in_commands(tmp_path, base_run, sample, cli, monkeypatch):
    from retrieval.training.resume import RunState

    out = _copy(base_run, tmp_path / "run")
    weights = (out / "model.safetensors").read_bytes()

    def never_better(self, epoch, row):
        self.history.append(row)
        return False

    monkeypatch.setattr(RunState, "record", never_better)
    done = cli("train", sample / "train", "--out", out, "--resume", "--epochs", "1", "--workers", "0")
    assert done.code == 0, done.err
    config = read_config(out)
    assert config["best_epoch"] == 0 and (out / "model.safetensors").read_bytes() == weights  # the best epoch's, as before
    assert len(config["commands"]) == 2 and config["commands"][1].endswith("--resume --epochs 1 --workers 0"), config["commands"]
    again = cli("train", sample / "train", "--out", out, "--resume", "--epochs", "2", "--workers", "0")
    assert again.code == 0, again.err
    assert len(read_config(out)["commands"]) == 3  # the next resume reads the list from config.json
