"""One commit, one atomic step (retrieval.run.versions): a save of the model's unit (weights and
config) or of the index's unit (gallery.json, gallery.ann, embeddings.npy) that fails at any step
of its commit leaves the old unit or the new one loadable, never neither; runs written before
versions load and are converted by their next commit."""

import json
import os
import shutil

import pytest
import torch

from commit_faults import Crash, failing_at
from retrieval.errors import RetrievalError
from retrieval.model import EmbeddingModel
from retrieval.run import versions
from retrieval.run import load_model, save_model, unit_paths

BACKBONE = "test_resnet"  # timm's 0.4M-parameter test network: the commit does not depend on the model


def _config(model):
    return {"image_size": 32, "data_config": model.data_config(32)}


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    return [EmbeddingModel(BACKBONE, 8).eval() for _ in range(3)]


def _weights(model):
    """What tells two models apart, cheaply: their weights."""
    return torch.cat([t.flatten().float() for t in model.state_dict().values()])


def _legacy_save(run_dir, model):
    """A run as written before versions: plain config.json and model.safetensors."""
    save_model(run_dir, model, _config(model))
    for name in ("config.json", "model.safetensors"):
        data = (run_dir / name).read_bytes()
        (run_dir / name).unlink()
        (run_dir / name).write_bytes(data)
    shutil.rmtree(run_dir / ".versions")


@pytest.mark.parametrize("legacy", [False, True], ids=["versioned", "written-before-versions"])
def test_a_model_save_failing_at_any_step_of_its_commit_leaves_the_old_or_the_new_model(tmp_path, monkeypatch, models, legacy):
    old, new, later = models
    weights = {"old": _weights(old), "new": _weights(new)}
    probe = tmp_path / "probe"
    (_legacy_save if legacy else lambda d, m: save_model(d, m, _config(m)))(probe, old)
    counter = failing_at(monkeypatch, step=10**6)
    save_model(probe, new, _config(new))
    steps = counter["n"]
    monkeypatch.undo()
    assert steps >= (11 if legacy else 7)  # fsyncs, the link over current (and, converting, a link per name)

    seen = set()
    start = tmp_path / "start"
    (_legacy_save if legacy else lambda d, m: save_model(d, m, _config(m)))(start, old)
    for step in range(1, steps + 1):
        run_dir = tmp_path / f"step{step}"
        shutil.copytree(start, run_dir, symlinks=True)
        failing_at(monkeypatch, step)
        with pytest.raises(Crash):
            save_model(run_dir, new, _config(new))
        monkeypatch.undo()
        loaded, config = load_model(run_dir)
        state = [name for name, out in weights.items() if torch.equal(_weights(loaded), out)]
        assert len(state) == 1, f"step {step}: neither the old nor the new model"
        assert config.weights_sha256 and json.loads((run_dir / "config.json").read_text())["backbone"] == BACKBONE
        seen.add(state[0])
        save_model(run_dir, later, _config(later))  # the next commit succeeds and clears what the crash left
        assert torch.equal(_weights(load_model(run_dir)[0]), _weights(later))
        assert sorted(p.name for p in (run_dir / ".versions").iterdir()) == sorted(["current", os.readlink(run_dir / ".versions" / "current")])
    assert seen == {"old", "new"}  # the failures fell before and after the commit point


def test_documented_names_are_links_into_the_current_version_and_a_removed_name_reads_as_missing(tmp_path, models):
    save_model(tmp_path, models[0], _config(models[0]))
    for name in ("config.json", "model.safetensors"):
        assert os.readlink(tmp_path / name) == f".versions/current/{name}"
    paths = unit_paths(tmp_path, ("config.json", "model.safetensors"))
    assert paths["config.json"].parent == paths["model.safetensors"].parent == (tmp_path / ".versions" / os.readlink(tmp_path / ".versions" / "current")).resolve()
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(RetrievalError, match="no model.safetensors"):
        load_model(tmp_path)


def test_a_copy_that_followed_the_links_loads_and_commits_again(tmp_path, models):
    save_model(tmp_path / "a", models[0], _config(models[0]))
    shutil.copytree(tmp_path / "a", tmp_path / "b")  # follows links: plain files, .versions/current a real folder
    assert not (tmp_path / "b" / "config.json").is_symlink()
    assert torch.equal(_weights(load_model(tmp_path / "b")[0]), _weights(models[0]))
    save_model(tmp_path / "b", models[1], _config(models[1]))
    assert torch.equal(_weights(load_model(tmp_path / "b")[0]), _weights(models[1]))
    assert (tmp_path / "b" / ".versions" / "current").is_symlink()


def test_a_reader_that_meets_a_commit_half_way_reads_the_new_version(tmp_path, models, monkeypatch):
    save_model(tmp_path, models[0], _config(models[0]))
    first = unit_paths(tmp_path, ("config.json", "model.safetensors"))
    save_model(tmp_path, models[1], _config(models[1]))  # removes the version `first` points into
    reads = []

    def read(paths):
        reads.append(paths)
        return json.loads(paths["config.json"].read_text())["weights_sha256"]

    original, stale = versions.unit_paths, [first]  # the first resolution is from before the commit
    monkeypatch.setattr(versions, "unit_paths", lambda folder, names: stale.pop() if stale else original(folder, names))
    digest = versions.read_unit(tmp_path, ("config.json", "model.safetensors"), read)
    assert len(reads) == 2 and digest == json.loads((tmp_path / "config.json").read_text())["weights_sha256"]


def test_a_full_disk_during_a_save_is_one_line_naming_the_run_and_the_old_model_stays(tmp_path, monkeypatch, models):
    old, new, _ = models
    save_model(tmp_path, old, _config(old))
    real_fsync = os.fsync

    def full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(RetrievalError, match=r"cannot write .*: No space left on device; what it held is as it was"):
        save_model(tmp_path, new, _config(new))
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert torch.equal(_weights(load_model(tmp_path)[0]), _weights(old))
    assert [p.name for p in (tmp_path / ".versions").iterdir() if p.name != "current"] == [os.readlink(tmp_path / ".versions" / "current")]


def test_another_os_error_inside_a_commit_is_not_reworded(tmp_path):
    with pytest.raises(FileNotFoundError):
        with versions.new_version(tmp_path, ("a.json",)):
            open(tmp_path / "no" / "such")
