"""Bad flag values and damaged run files through the real command line (in process through
``retrieval.cli.main``, and once as a real process): exit status 2 and one line on stderr, never a traceback."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import fake_runs
from cli_runner import cli  # noqa: F401


@pytest.fixture(scope="module")
def run_and_gallery(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad-input")
    gallery = fake_runs.make_gallery(root / "gallery")
    return fake_runs.make_run(root / "run", gallery, mining=False), gallery


def assert_one_line_error(code, err, *words):
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    for word in words:
        assert word in lines[0], lines[0]


@pytest.mark.parametrize("flags, named", [
    (["--augment", "inf"], "--augment"),
    (["--unlabelled", "--augment", "inf"], "--augment"),
    (["--augment", "4"], "--augment"),
    (["--image-size", "100000"], "--image-size"),
    (["--embedding-dim", "1000000"], "--embedding-dim"),
    (["--margin", "5"], "--margin must be from 0 to 2"),
    (["--seed", "-1"], "--seed must be a whole number from 0"),
    (["--groups-per-batch", "2"], "--groups-per-batch needs --class-groups FILE"),
    (["--groups-per-batch", "0"], "--groups-per-batch must be at least 1"),
])
def test_train_refuses_unbounded_values_in_one_line(run_and_gallery, tmp_path, cli, flags, named):
    _, gallery = run_and_gallery
    result = cli("train", gallery, "--out", tmp_path / "out", "--epochs", "0", "--backbone", "resnet10t", *flags)
    assert_one_line_error(result.code, result.err, named)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", ["index", "evaluate"])
@pytest.mark.parametrize("batch_size", ["0", "-3"])
def test_index_and_evaluate_refuse_a_batch_size_below_one(run_and_gallery, tmp_path, cli, command, batch_size):
    run, gallery = run_and_gallery
    result = cli(command, run, gallery, "--batch-size", batch_size, "--device", "cpu")
    assert_one_line_error(result.code, result.err, "--batch-size")


@pytest.mark.parametrize("folders, named", [
    ([], "give DATA_DIR (leave-one-out) or --query DIR --gallery DIR"),
    (["--json"], "give DATA_DIR (leave-one-out) or --query DIR --gallery DIR"),
    (["--gallery", "{gallery}"], "needs both --query DIR and --gallery DIR"),
    (["--query", "{gallery}"], "needs both --query DIR and --gallery DIR"),
    (["{gallery}", "--query", "{gallery}", "--gallery", "{gallery}"], "not both"),
])
def test_evaluate_without_the_folders_it_needs_says_so_in_one_line(run_and_gallery, cli, folders, named):
    run, gallery = run_and_gallery
    result = cli("evaluate", run, *(str(f).format(gallery=gallery) for f in folders))
    assert_one_line_error(result.code, result.err, named)


def test_index_refuses_zero_trees(run_and_gallery, cli):
    run, gallery = run_and_gallery
    result = cli("index", run, gallery, "--n-trees", "0")
    assert_one_line_error(result.code, result.err, "--n-trees")


@pytest.mark.parametrize("key", ["items", "roots", "n_items", "embedding_dim", "files", "model_fingerprint", "n_trees"])
def test_search_on_a_gallery_json_without_one_of_its_keys_is_one_line(run_and_gallery, tmp_path, cli, key):
    import shutil

    run, gallery = run_and_gallery
    copy = shutil.copytree(run, tmp_path / "run", symlinks=True)
    path = (copy / "index" / "gallery.json").resolve()
    metadata = json.loads(path.read_text())
    del metadata[key]
    path.unlink()
    path.write_text(json.dumps(metadata))
    result = cli("search", copy, gallery / "apple" / "apple_0.png")
    assert_one_line_error(result.code, result.err, "gallery.json")


def test_a_real_process_prints_one_line_and_exits_2_on_bad_input(run_and_gallery, tmp_path):
    _, gallery = run_and_gallery
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    result = subprocess.run([sys.executable, "-m", "retrieval.cli", "train", str(gallery), "--out", str(tmp_path / "out"),
                             "--augment", "inf"], capture_output=True, text=True, env=env, timeout=120)
    assert_one_line_error(result.returncode, result.stderr, "--augment")



@pytest.mark.parametrize("command", ["search", "verify"])
def test_a_query_above_the_query_pixel_limit_is_refused_in_one_line(run_and_gallery, tmp_path, cli, command):
    from PIL import Image

    from retrieval.data.images import MAX_QUERY_PIXELS

    big = tmp_path / "big.png"
    Image.new("1", (8000, MAX_QUERY_PIXELS // 8000 + 1)).save(big)  # 1 bit a pixel: a small file
    run, gallery = run_and_gallery
    extra = [gallery / "apple" / "apple_0.png"] if command == "verify" else []
    result = cli(command, run, big, *extra)
    assert_one_line_error(result.code, result.err, "too large", "queries")


def test_the_cli_starts_without_importing_torch():
    """`retrieval --help`, and every one-line error before a command's work, should not wait
    ~2 s for torch: the CLI's modules import it inside the commands that need it (a module-level
    `from retrieval.distributed import ...` in cli/gallery.py once did, for every command)."""
    code = "import sys, retrieval.cli; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"


@pytest.mark.parametrize("command", ["search", "verify"])
def test_look_harder_on_a_run_without_faces_is_one_line(run_and_gallery, cli, command):
    run, gallery = run_and_gallery
    image = gallery / "apple" / "apple_0.png"
    result = cli(command, run, image, *([image] if command == "verify" else []), "--look-harder", "--device", "cpu")
    assert_one_line_error(result.code, result.err, "--look-harder looks for faces", "without --faces")


def test_look_harder_on_a_run_without_faces_is_its_own_error_before_any_index_is_built(tmp_path, cli):
    gallery = fake_runs.make_gallery(tmp_path / "gallery")
    run = fake_runs.make_run(tmp_path / "run", gallery, index=False, mining=False)
    result = cli("search", run, gallery / "apple" / "apple_0.png", "--look-harder")
    assert_one_line_error(result.code, result.err, "--look-harder looks for faces", "without --faces")


@pytest.mark.parametrize("args, words", [
    (("search",), ["Missing argument", "search --help"]),
    (("search", "RUN", "IMAGE", "-k", "0"), ["-k", "search --help"]),
    (("search", "RUN", "IMAGE", "--no-such-flag"), ["No such option: --no-such-flag"]),
    (("no-such-command",), ["No such command"]),
])
def test_a_missing_argument_or_unknown_flag_is_one_line_too(cli, args, words):
    result = cli(*args)
    assert_one_line_error(result.code, result.err, *words)


@pytest.mark.parametrize("search_k", ["0", "-5"])
def test_search_refuses_a_search_k_below_one(run_and_gallery, cli, search_k):
    run, gallery = run_and_gallery
    result = cli("search", run, gallery / "apple" / "apple_0.png", "--search-k", search_k)
    assert_one_line_error(result.code, result.err, "--search-k must be at least 1")


def test_a_folder_given_as_the_query_is_named_a_folder(run_and_gallery, cli):
    run, gallery = run_and_gallery
    result = cli("search", run, gallery)
    assert_one_line_error(result.code, result.err, "is a folder, not an image")


def test_gallery_root_must_exist_and_a_wrong_one_is_warned_of(run_and_gallery, tmp_path, cli):
    run, gallery = run_and_gallery
    query = gallery / "apple" / "apple_0.png"
    missing = cli("search", run, query, "--gallery-root", tmp_path / "nothere")
    assert_one_line_error(missing.code, missing.err, "--gallery-root", "nothere", "no such folder")
    (tmp_path / "elsewhere").mkdir()
    wrong = cli("search", run, query, "--gallery-root", tmp_path / "elsewhere", "-k", "1")
    assert wrong.code == 0 and len(wrong.lines) == 1 and "none of the" in wrong.lines[0] and "is it the folder the index was built from?" in wrong.lines[0]
    right = cli("search", run, query, "--gallery-root", gallery, "-k", "1")
    assert right.code == 0 and not right.lines, right.err


def test_ctrl_c_is_one_line_with_status_130(run_and_gallery, cli, monkeypatch):
    """typer turns a KeyboardInterrupt inside a command into exit status 130; main() says what it means."""
    import retrieval.index

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    run, gallery = run_and_gallery
    monkeypatch.setattr(retrieval.index, "build_index", interrupted)
    result = cli("index", run, gallery, "--quiet")
    assert result.code == 130
    assert result.lines == ["interrupted (Ctrl-C): stopped before finishing; what was saved before is as it was"]
    assert "Traceback" not in result.err


def test_ctrl_c_while_the_command_line_is_imported_is_one_line_with_status_130():
    """A Ctrl-C in the second it takes to import typer, torch and timm lands before main() can catch
    it: the entry point (``retrieval.__main__``, also the console script's) says it in one line. The
    Ctrl-C is made to land there by a finder that raises it when ``retrieval.cli`` is imported."""
    script = (
        "import sys\n"
        "class CtrlC:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'retrieval.cli':\n"
        "            raise KeyboardInterrupt\n"
        "sys.meta_path.insert(0, CtrlC())\n"
        "from retrieval.__main__ import main\n"
        "main()\n"
    )
    done = subprocess.run([sys.executable, "-c", script, "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 130, done.stderr
    assert done.stderr.splitlines() == ["interrupted (Ctrl-C) while starting: nothing was read or written"]
    assert done.stdout == ""


def test_the_console_script_and_python_m_start_at_the_same_entry_point():
    """``retrieval`` (pyproject's console script) and ``python -m retrieval`` both run ``retrieval.__main__:main``."""
    import tomllib

    project = tomllib.loads((Path(__file__).resolve().parent.parent / "pyproject.toml").read_text())
    assert project["project"]["scripts"]["retrieval"] == "retrieval.__main__:main"
    done = subprocess.run([sys.executable, "-m", "retrieval", "--help"], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0 and "Usage: python -m retrieval" in done.stdout, done.stderr


def test_same_group_negatives_warn_of_training_classes_alone_in_their_group(sample, tmp_path, cli):
    """--negatives same-group with a class that no other class shares a group with: that class is never pushed
    from anything, which the run says in one warning line naming it and what its loss does with it (-P 3: at -P 2
    a batch's two classes come from the 2 groups drawn, alone in each, which is refused)."""
    classes = sorted(p.name for p in (sample / "train").iterdir() if p.is_dir())
    groups = tmp_path / "groups.csv"
    groups.write_text("class,group\n" + "".join(f"{name},{'pair' if k < 2 else 'rest'}\n" for k, name in enumerate(classes[:-1]))
                      + f"{classes[-1]},alone\n")
    flags = ["--epochs", "0", "--backbone", "resnet10t", "--image-size", "32", "--embedding-dim", "16", "-P", "3", "-K", "2",
             "--workers", "0", "--val-fraction", "0", "--quiet", "--class-groups", groups]
    result = cli("train", sample / "train", "--out", tmp_path / "run", "--negatives", "same-group", *flags)
    assert result.code == 0, result.err
    warned = [line for line in result.lines if "can have no negative" in line]
    assert len(warned) == 1 and f"1 of {len(classes)} training classes" in warned[0] and classes[-1] in warned[0], result.err
    assert warned[0].endswith("their images get no gradient (every tuple of the triplet loss needs a negative)"), warned[0]
    pulled = cli("train", sample / "train", "--out", tmp_path / "run3", "--negatives", "same-group", "--loss", "contrastive", *flags)
    (line,) = [line for line in pulled.lines if "can have no negative" in line]
    assert line.endswith("training only pulls their images together (the contrastive loss's positive pairs)"), line
    everyone = cli("train", sample / "train", "--out", tmp_path / "run2", "--negatives", "prefer-same-group", *flags)
    assert everyone.code == 0 and not any("can have no negative" in line for line in everyone.lines)


def test_a_one_class_folder_is_told_to_add_classes_not_to_lower_the_validation_share(sample, tmp_path, cli):
    import shutil

    one = tmp_path / "one"
    first = sorted(p for p in (sample / "train").iterdir() if p.is_dir())[0]
    shutil.copytree(first, one / first.name)
    result = cli("train", one, "--out", tmp_path / "run", "--epochs", "0", "--backbone", "resnet10t", "--quiet")
    assert result.code == 2 and result.lines[-1].startswith("error: ") and "Traceback" not in result.err, result.err
    assert "holding out 0 for validation" in result.lines[-1] and "add classes: DATA_DIR/<class>/<image>" in result.lines[-1]
    assert "--val-fraction" not in result.lines[-1]


def test_the_parent_of_a_data_sets_splits_is_refused_with_the_split_to_give(sample, tmp_path, cli):
    result = cli("train", sample, "--out", tmp_path / "run", "--epochs", "0", "--backbone", "resnet10t", "--quiet")
    assert_one_line_error(result.code, result.err, "holds the data splits catalog, test, train", f"e.g. {sample / 'train'}")
    assert not (tmp_path / "run").exists()


def test_index_on_a_full_disk_is_one_line_and_the_index_stays(run_and_gallery, tmp_path, cli, monkeypatch):
    import shutil

    from retrieval.index import store

    run, gallery = run_and_gallery
    copy = shutil.copytree(run, tmp_path / "run", symlinks=True)
    before = (copy / "index" / "gallery.json").read_bytes()

    def full(self, first_row, rows):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(store.RowWriter, "write", full)
    result = cli("index", copy, gallery, "--quiet")
    assert_one_line_error(result.code, result.err, "No space left on device", "as it was")
    assert (copy / "index" / "gallery.json").read_bytes() == before


def test_an_os_error_outside_a_commit_is_one_line_naming_the_file(run_and_gallery, cli, monkeypatch):
    from retrieval import evaluate

    def refused(*args, **kwargs):
        raise PermissionError(13, "Permission denied", "/some/photo.jpg")

    monkeypatch.setattr(evaluate, "evaluate_run", refused)
    run, gallery = run_and_gallery
    result = cli("evaluate", run, gallery, "--quiet")
    lines = result.err.strip().splitlines()
    assert result.code == 1 and lines == ["error: /some/photo.jpg: Permission denied"], result.err


def test_a_gallery_moved_since_the_index_was_built_is_warned_of_without_gallery_root(run_and_gallery, tmp_path, cli):
    import shutil

    run, gallery = run_and_gallery
    copy = shutil.copytree(run, tmp_path / "run", symlinks=True)
    moved = shutil.copytree(gallery, tmp_path / "gallery")
    assert cli("index", copy, moved, "--quiet").code == 0
    query = gallery / "apple" / "apple_0.png"
    assert cli("search", copy, query, "-k", "1").lines == []
    shutil.move(moved, tmp_path / "gallery-moved")
    result = cli("search", copy, query, "-k", "1")
    assert result.code == 0 and len(result.lines) == 1, result.err
    assert f"gallery folder {moved}: none of the" in result.lines[0] and "--gallery-root" in result.lines[0]
    rerooted = cli("search", copy, query, "-k", "1", "--gallery-root", tmp_path / "gallery-moved")
    assert rerooted.code == 0 and not rerooted.lines, rerooted.err


@pytest.mark.parametrize("command", ["search", "verify"])
def test_an_empty_query_file_is_called_an_empty_file_as_the_scan_calls_it(run_and_gallery, tmp_path, cli, command):
    run, gallery = run_and_gallery
    empty = tmp_path / "zero.png"
    empty.write_bytes(b"")
    extra = [gallery / "apple" / "apple_0.png"] if command == "verify" else []
    result = cli(command, run, empty, *extra)
    assert_one_line_error(result.code, result.err, "zero.png", "empty file")


def test_under_torchrun_only_rank_0_prints_the_error_line(run_and_gallery, cli, monkeypatch):
    run, gallery = run_and_gallery
    monkeypatch.setenv("RANK", "1")  # every process of a torchrun launch meets the same bad input
    quiet = cli("index", run, gallery / "nope", "--quiet")
    assert quiet.code == 2 and quiet.err == "", quiet.err
    assert cli("search", run, gallery / "apple" / "apple_0.png", "--bogus").err == ""
    monkeypatch.setenv("RANK", "0")
    loud = cli("index", run, gallery / "nope", "--quiet")
    assert_one_line_error(loud.code, loud.err, "nope")


def test_under_torchrun_only_rank_0_says_it_stops_after_the_step(monkeypatch, capsys):
    import signal

    from retrieval.training.progress import InterruptFlag

    for rank, said in (("1", False), ("0", True)):
        monkeypatch.setenv("RANK", rank)
        with InterruptFlag() as flag:
            signal.raise_signal(signal.SIGINT)
        assert flag.requested
        assert ("stopping after this step" in capsys.readouterr().err) == said


@pytest.mark.parametrize("command", ["calibrate", "evaluate", "index"])
def test_a_file_given_as_the_run_directory_is_called_a_file_not_missing(run_and_gallery, tmp_path, cli, command):
    _, gallery = run_and_gallery
    image = next(p for p in Path(gallery).rglob("*") if p.is_file())
    result = cli(command, image, gallery)
    assert_one_line_error(result.code, result.err, "not a run directory", "is a file")


@pytest.mark.parametrize("flags, named", [
    (["--loss", "triplet", "--miner", "semihard", "--margin", "0"], "--miner semihard keeps only triplets with 0 < d_an − d_ap < ε"),
    (["--margin", "0"], "--miner semihard (the default of --loss triplet)"),
    (["--loss", "triplet", "--miner", "easy"], "--miner easy keeps only triplets whose triplet loss is 0 (d_an − d_ap ≥ ε)"),
    (["--loss", "npair", "--miner", "pair-active", "--margin", "0"], "the npair loss needs a negative in every tuple"),
])
def test_train_refuses_an_objective_that_learns_nothing_in_one_line(run_and_gallery, tmp_path, cli, flags, named):
    """Settings whose loss is 0 on every batch whatever the model (nothing mined, or only zero hinges): one line,
    before anything is written, not a run that "trains" at loss 0.0000."""
    _, gallery = run_and_gallery
    result = cli("train", gallery, "--out", tmp_path / "out", "--epochs", "0", "--backbone", "resnet10t", *flags)
    assert_one_line_error(result.code, result.err, named, "nothing would be learnt")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("flags, named", [
    (["--groups-per-batch", "9"], "--groups-per-batch 9 but the training classes of two or more images fall in only 3 group(s)"),
    (["--groups-per-batch", "3", "-P", "2"], "--groups-per-batch 3 but a batch holds only 2 classes (-P)"),
    (["--negatives", "same-group", "-P", "2"], "every class of a batch is alone in its group"),
])
def test_train_refuses_group_batches_that_cannot_be_drawn_or_hold_no_negative_in_one_line(sample, tmp_path, cli, flags, named):
    """A typed --groups-per-batch above the groups there are, or above -P, is refused as a typed -P above the classes
    is (not clamped behind the user's back and recorded as typed); same-group negatives with -P no more than the
    groups drawn (default 2) leave every class of a batch alone in its group: nothing to learn, refused."""
    classes = sorted(p.name for p in (sample / "train").iterdir() if p.is_dir())
    groups = tmp_path / "groups.csv"
    groups.write_text("class,group\n" + "".join(f"{name},{name.split('-')[0]}\n" for name in classes))  # 3 shapes
    result = cli("train", sample / "train", "--out", tmp_path / "out", "--epochs", "0", "--backbone", "resnet10t", "--image-size", "32",
                 "--workers", "0", "--val-fraction", "0", "--quiet", "--class-groups", groups, "-P", "4", *flags)  # the last -P wins
    assert result.code == 2 and "Traceback" not in result.err, result.err
    assert len(result.lines) == 1 and result.lines[0].startswith("error: ") and named in result.lines[0], result.err
    assert not (tmp_path / "out").exists()


def test_a_margin_the_objective_never_uses_is_warned_of_in_one_line(sample, tmp_path, cli):
    flags = ["--epochs", "0", "--backbone", "resnet10t", "--image-size", "32", "--embedding-dim", "16", "--workers", "0", "--quiet"]
    result = cli("train", sample / "train", "--out", tmp_path / "run", "--loss", "infonce", "--margin", "0.3", *flags)
    assert result.code == 0, result.err
    (line,) = [line for line in result.lines if "--margin" in line]
    assert line.startswith("warning: --margin 0.3 has no effect on training: the infonce loss has no margin"), line
    used = cli("train", sample / "train", "--out", tmp_path / "run2", "--loss", "infonce", "--miner", "semihard", "--margin", "0.3", *flags)
    assert used.code == 0 and not [line for line in used.lines if "--margin" in line], used.err


@pytest.mark.parametrize("flags, named", [
    (["-P", "100"], "-P"),
    (["--device", "bogus"], "unknown device 'bogus'"),
    (["--weights", "/nonexistent/w.safetensors"], "w.safetensors"),
])
def test_train_refused_at_set_up_prints_the_error_alone_not_after_the_defaults_line(sample, tmp_path, cli, flags, named):
    """The "from-scratch defaults …" line came on stdout before these errors: two lines for one refusal."""
    result = cli("train", sample / "train", "--out", tmp_path / "out", "--epochs", "0", "--backbone", "resnet10t",
                 "--image-size", "32", "-P", "4", *flags)  # -P 4: no warning of a smaller P (a later -P wins)
    assert_one_line_error(result.code, result.err, named)
    assert result.out.strip() == "", result.out
    started = cli("train", sample / "train", "--out", tmp_path / "ok", "--epochs", "0", "--backbone", "resnet10t",
                  "--image-size", "32", "--workers", "0")
    assert started.code == 0, started.err
    assert started.out.splitlines()[0].startswith("from-scratch defaults"), "a run that starts still says so first"
