"""Paths recorded in run files become files only inside their root (retrieval.run.resolve_logged_path):
relative, without ``..``, under the root with symbolic links followed; the root itself is never the
file system's root, a system folder or a home folder."""

import os
from pathlib import Path

import pytest

from retrieval.errors import RetrievalError
from retrieval.run import check_relative_paths, check_root, resolve_logged_path


@pytest.fixture
def data(tmp_path):
    (tmp_path / "data" / "cat").mkdir(parents=True)
    (tmp_path / "data" / "cat" / "a.png").write_bytes(b"png")
    (tmp_path / "secret.png").write_bytes(b"secret")
    return tmp_path / "data"


def test_a_relative_path_under_its_root_resolves_to_the_file(data):
    assert resolve_logged_path(data, "cat/a.png") == data.resolve() / "cat" / "a.png"
    assert resolve_logged_path({"data_dir": str(data)}, "cat/a.png") == data.resolve() / "cat" / "a.png"  # a run's config
    assert resolve_logged_path(data, "cat/not-yet.png").name == "not-yet.png"  # missing: the reader says it cannot read it


@pytest.mark.parametrize("path, message", [
    ("../secret.png", "climbs out"), ("cat/../../secret.png", "climbs out"), ("..", "climbs out"),
    ("cat\\..\\..\\secret.png", "climbs out"), ("/etc/passwd", "absolute"), ("", "not a file path"),
    (None, "not a file path"), (7, "not a file path"), ("cat/a.png\x00", "not a file path"),
])
def test_a_path_that_is_absolute_or_climbs_out_is_refused_in_one_line(data, path, message):
    with pytest.raises(RetrievalError, match=message) as error:
        resolve_logged_path(data, path, source="mining/epoch_001.jsonl")
    assert str(error.value).startswith("mining/epoch_001.jsonl: ") and "\n" not in str(error.value)


def test_a_symbolic_link_that_leaves_the_root_is_refused_and_one_inside_is_followed(data):
    (data / "cat" / "escape.png").symlink_to(data.parent / "secret.png")
    (data / "cat" / "alias.png").symlink_to(data / "cat" / "a.png")
    os.symlink("..", data / "up")
    with pytest.raises(RetrievalError, match="through a symbolic link"):
        resolve_logged_path(data, "cat/escape.png")
    with pytest.raises(RetrievalError, match="through a symbolic link"):
        resolve_logged_path(data, "up/secret.png")
    assert resolve_logged_path(data, "cat/alias.png").name == "alias.png"


def test_a_folder_or_a_fifo_in_place_of_an_image_is_refused(data):
    os.mkfifo(data / "cat" / "pipe.png")  # opening it would block the reader for ever
    with pytest.raises(RetrievalError, match="not a regular file"):
        resolve_logged_path(data, "cat/pipe.png")
    with pytest.raises(RetrievalError, match="not a regular file"):
        resolve_logged_path(data, "cat")


@pytest.mark.parametrize("root", ["/", "/etc", "/etc/ssl", "/proc", "/proc/self/root", "/sys/kernel", "/dev", "/usr",
                                  "/home", "/tmp", "/var", "/root", "/boot/grub", "//", "/etc/../"])
def test_the_file_systems_root_and_system_folders_are_never_a_root(root):
    with pytest.raises(RetrievalError, match="refusing the root"):
        check_root(root)
    with pytest.raises(RetrievalError, match="refusing the root"):
        resolve_logged_path(root, "etc/passwd")


def test_the_home_folder_itself_and_a_relative_root_are_refused(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(RetrievalError, match="refusing the root"):
        check_root(tmp_path)
    assert check_root(tmp_path / "photos") == (tmp_path / "photos").resolve()  # a folder inside it is fine
    with pytest.raises(RetrievalError, match="not an absolute path"):
        check_root("data")


def test_a_link_to_a_system_folder_is_refused_as_that_folder(tmp_path):
    (tmp_path / "innocent").symlink_to("/etc")
    with pytest.raises(RetrievalError, match="refusing the root .*innocent .*that is /etc"):
        check_root(tmp_path / "innocent")


def test_a_million_paths_are_checked_at_once_and_the_first_bad_one_is_named():
    good = [f"class{i % 100}/img_{i}.jpg" for i in range(100_000)]
    check_relative_paths(good)
    check_relative_paths(["...", "a/..b", "a/b..", ".x/y"])  # dots that do not climb
    for bad, message in ((good + ["a/../../b"], "'a/../../b' climbs out"), (["/abs"] + good, "'/abs' is an absolute"),
                         (good[:3] + [None], "None is not a file path")):
        with pytest.raises(RetrievalError, match=message):
            check_relative_paths(bad)


def test_brute_force_agrees_with_the_fast_check_on_tricky_paths():
    tricky = ["a", "..", "../a", "a/..", "a/../b", "a/..b", "..a", "a..", "/a", "a//b", "./a", "a/./b", "a\\..\\b", "a\\b",
              ".../a", "a/...", "a/b/..", "a/b/../..", "a/.", "."]

    def brute(path):  # relative, and no component is ".."
        parts = Path(path.replace("\\", "/")).parts
        return not path.startswith("/") and ".." not in parts

    for path in tricky:
        try:
            check_relative_paths(["ok", path, "ok2"])
            fast = True
        except RetrievalError:
            fast = False
        assert fast == brute(path), path
