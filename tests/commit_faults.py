"""Failing a commit of retrieval.run.versions at one of its steps, as a crash would: the tests of
the model's unit (tests/run) and of the index's (tests/index) import it (tests/ is on sys.path)."""

import os

from retrieval.run import versions


class Crash(Exception):
    """The failure injected at one step of a commit."""


def failing_at(monkeypatch, step):
    """Make the ``step``-th file-system step (os.fsync / os.replace / os.symlink) inside a commit
    raise, and leave what it wrote behind, as a crash would (no clean-up). Returns the step counter."""
    calls = {"n": 0, "inside": False}
    real = {name: getattr(os, name) for name in ("fsync", "replace", "symlink")}

    def counted(name):
        def call(*args, **kwargs):
            if calls["inside"]:
                calls["n"] += 1
                if calls["n"] == step:
                    raise Crash(f"{name} at step {step}")
            return real[name](*args, **kwargs)
        return call

    for name in real:
        monkeypatch.setattr(os, name, counted(name))
    real_commit = versions._commit

    def commit(*args):
        calls["inside"] = True
        try:
            return real_commit(*args)
        finally:
            calls["inside"] = False

    monkeypatch.setattr(versions, "_commit", commit)
    monkeypatch.setattr(versions.shutil, "rmtree", lambda *a, **k: None)  # a crash cleans nothing up
    return calls
