"""`make test` installs what the tests need on a fresh machine: the browser test's Chromium, with apt as
root (as .ci/run did alone), or one line saying how when it cannot. Fake `id` / `apt-get` / `sudo` on PATH
stand in for the machine; nothing is installed."""

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def fake_machine(tmp_path: Path, *, uid: int, apt: bool) -> dict:
    """PATH with a recording apt-get (when ``apt``), an ``id -u`` answering ``uid``, no sudo; the rest from /usr/bin."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.log"
    (bin_dir / "id").write_text(f"#!/bin/sh\necho {uid}\n")
    (bin_dir / "sudo").write_text("#!/bin/sh\nexit 1\n")  # no passwordless sudo
    if apt:
        (bin_dir / "apt-get").write_text(f'#!/bin/sh\necho "apt-get $*" >> {log}\n')
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    tools = tmp_path / "tools"  # make's recipes need sh and friends, but not the real apt-get
    tools.mkdir()
    for name in ("sh", "bash", "echo", "test", "[", "true", "cat", "env", "dirname", "make"):
        real = Path("/usr/bin") / name
        if real.exists():
            (tools / name).symlink_to(real)
    return dict(os.environ, PATH=f"{bin_dir}:{tools}"), log


def make(target: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "--no-print-directory", target, "CHROMIUM=no-such-chromium"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)


def test_make_installs_chromium_with_apt_as_root(tmp_path):
    env, log = fake_machine(tmp_path, uid=0, apt=True)
    result = make("chromium", env)
    assert result.returncode == 0, result.stderr
    calls = log.read_text().splitlines()
    assert calls[0].startswith("apt-get update") and "install" in calls[-1] and calls[-1].split()[-1] == "chromium"


@pytest.mark.parametrize("uid, apt", [(1000, True), (0, False)])
def test_make_says_in_one_line_how_to_install_chromium_when_it_cannot(tmp_path, uid, apt):
    env, log = fake_machine(tmp_path, uid=uid, apt=apt)
    result = make("chromium", env)
    assert result.returncode == 0, result.stderr
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert len(lines) == 1 and "chromium" in lines[0].lower() and "browser test" in lines[0]
    assert not log.exists()


def test_make_test_runs_the_chromium_step_before_pytest(tmp_path):
    # an install stamp newer than pyproject.toml and the Makefile: make has nothing to install (a stamp
    # that is the Makefile itself would be remade, even under -n, whenever pyproject.toml is newer)
    stamp = tmp_path / "installed"
    stamp.touch()
    dry = subprocess.run(["make", "-n", "test", f"STAMP={stamp}"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.index("apt-get") < dry.stdout.index("pytest")
