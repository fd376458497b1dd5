"""Atomic writes (retrieval.run.store): the folder is flushed after the rename, files and folders
follow the umask, temporaries of killed writers are removed."""

import os
import stat

import pytest
import torch

from retrieval.model import EmbeddingModel
from retrieval.run import remove_stale_temporaries, save_model, write_atomic, write_checkpoint, write_json


def test_write_atomic_flushes_the_folder_after_the_rename(tmp_path, monkeypatch):
    flushed, real_fsync, real_replace = [], os.fsync, os.replace

    def fsync(fd):
        flushed.append("folder" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
        real_fsync(fd)

    def replace(source, target):
        flushed.append("rename")
        real_replace(source, target)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    write_atomic(tmp_path / "a.json", b"{}")
    assert flushed == ["file", "rename", "folder"]


@pytest.fixture
def umask(request):
    before = os.umask(request.param)
    yield request.param
    os.umask(before)


def modes(folder):
    """{relative path: permission bits} of every file and folder under ``folder`` (links left out)."""
    return {str(p.relative_to(folder)): stat.S_IMODE(p.lstat().st_mode) for p in folder.rglob("*") if not p.is_symlink()}


@pytest.mark.parametrize("umask", [0o022, 0o077], indirect=True, ids=["umask022", "umask077"])
def test_run_files_follow_the_umask(tmp_path, umask):
    torch.manual_seed(0)
    model = EmbeddingModel("test_resnet", 8)
    run = tmp_path / "run"
    save_model(run, model, {"image_size": 32, "data_config": model.data_config(32)})
    save_model(run, model, {"image_size": 32, "data_config": model.data_config(32)}, weights_name="model_last.safetensors")
    write_json(run / "metrics.jsonl", {"epoch": 0})
    write_checkpoint(run, {"epoch": 0})
    found = modes(run)
    assert {"checkpoint.pt", "model_last.safetensors", "metrics.jsonl", ".versions"} <= set(found)
    assert sum(name.endswith("model.safetensors") for name in found) == 1
    for name, mode in found.items():
        assert mode == (0o666 if (run / name).is_file() else 0o777) & ~umask, f"{name}: {oct(mode)}"


def test_stale_temporaries_are_removed_and_nothing_else(tmp_path):
    for name in (".config.json.1a2b.tmp", ".metrics.jsonl.x.tmp", "keep.tmp", ".hidden", "config.json"):
        (tmp_path / name).write_text("x")
    removed = remove_stale_temporaries(tmp_path)
    assert sorted(p.name for p in removed) == [".config.json.1a2b.tmp", ".metrics.jsonl.x.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".hidden", "config.json", "keep.tmp"]


def test_write_atomic_on_a_full_disk_is_one_line_naming_the_file_and_keeps_the_old_one(tmp_path, monkeypatch):
    from retrieval.errors import RetrievalError

    path = tmp_path / "metrics.jsonl"
    write_atomic(path, b"old\n")

    def full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(RetrievalError, match=r"cannot write .*metrics\.jsonl: No space left on device; it is as it was"):
        write_atomic(path, b"new\n")
    assert path.read_bytes() == b"old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.jsonl"]  # no temporary left


def test_write_atomic_into_a_folder_it_cannot_write_is_one_line(tmp_path, monkeypatch):
    from retrieval.errors import RetrievalError

    def refused(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "open", refused)
    with pytest.raises(RetrievalError, match=r"cannot write .*x\.json: Permission denied"):
        write_atomic(tmp_path / "x.json", b"{}")
