"""One writer at a time (retrieval.run.lock): a second holder is refused in one line naming the
first process; a crashed holder leaves no stale lock."""

import os
import signal
import subprocess
import sys
import time

import pytest

from retrieval.errors import RetrievalError
from retrieval.run import hold_lock

HOLDER = ("import sys, time; from retrieval.run import hold_lock\n"
          "with hold_lock(sys.argv[1], 'test'):\n"
          "    print('locked', flush=True); time.sleep(120)\n")


@pytest.fixture
def holder(tmp_path):
    """Another process holding ``tmp_path/run``'s lock (killed at the end)."""
    process = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path / "run"), "retrieval", "train"],
                               stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "locked"
    yield process
    process.kill()
    process.wait()


def test_a_second_holder_is_refused_in_one_line_naming_the_first_process(tmp_path, holder):
    with pytest.raises(RetrievalError, match=f"in use by another process \\(process {holder.pid} on ") as error:
        with hold_lock(tmp_path / "run", "`retrieval train` on a run directory"):
            pass
    assert "\n" not in str(error.value) and "only one `retrieval train` on a run directory at a time" in str(error.value)


def test_a_killed_holder_leaves_no_stale_lock(tmp_path, holder):
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    assert (tmp_path / "run" / ".lock").exists()  # its file stays; its lock went with the process
    with hold_lock(tmp_path / "run", "test"):
        assert "process" in (tmp_path / "run" / ".lock").read_text()
    assert not (tmp_path / "run" / ".lock").exists()  # let go: removed


def test_a_lock_is_held_until_the_block_ends_even_on_an_error(tmp_path):
    with pytest.raises(KeyError):
        with hold_lock(tmp_path, "test"):
            with pytest.raises(RetrievalError):
                with hold_lock(tmp_path, "test"):  # the same process, another open file: refused too
                    pass
            raise KeyError("boom")
    with hold_lock(tmp_path, "test"):
        pass


def test_a_second_retrieval_train_on_one_out_stops_at_once_with_one_line(tmp_path, holder, sample):
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "retrieval", "train", str(sample / "train"), "--out", str(tmp_path / "run"),
                           "--epochs", "0", "--quiet"], capture_output=True, text=True, timeout=300)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert lines[0].startswith("error: ") and f"process {holder.pid}" in lines[0] and "retrieval train" in lines[0]
    assert time.perf_counter() - started < 120  # it did not wait for the other run
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [".lock"]  # and wrote nothing
