"""A damaged or crafted ``index/gallery.ann`` never kills the process: the full SHA-256 recorded at
build and checked at load, and the node-by-node check of Annoy's layout
(retrieval.index.annoy_file.check_annoy_file), each a one-line error through the real CLI."""

import hashlib
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from index_helpers import gallery_dir, indexed_run, large_index, run_dir, save_tiny_run, write_images  # noqa: F401 (fixtures)
from retrieval.errors import RetrievalError
from retrieval.index import GalleryIndex
from retrieval.index.annoy_file import build_annoy, check_annoy_file, node_size

DIM = 8


def _annoy(path, n, n_trees, dim=DIM, seed=0):
    rows = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    build_annoy(rows / np.linalg.norm(rows, axis=1, keepdims=True), path, n_trees=n_trees, n_jobs=1).unload()
    return path


def _nodes(path, dim=DIM):
    """The file as int32 rows, one per node: n_descendants, then children / norm and the vector."""
    return np.fromfile(path, dtype=np.int32).reshape(-1, 3 + dim)


@pytest.mark.parametrize("n, n_trees", [(1, 3), (DIM + 2, 2), (DIM + 3, 4), (700, 6)])
def test_every_index_annoy_builds_passes_and_its_hash_is_the_files_sha256(tmp_path, n, n_trees):
    path = _annoy(tmp_path / "a.ann", n, n_trees)
    assert check_annoy_file(path, DIM, n) == hashlib.sha256(path.read_bytes()).hexdigest()
    assert path.stat().st_size % node_size(DIM) == 0 and node_size(DIM) == 12 + 4 * DIM


def _first(nodes, n, kind):
    """The id of the first node of a kind: "item", "bucket" (2..K ids) or "split"."""
    counts, ids = nodes[:, 0], np.arange(len(nodes))
    mask = {"item": ids < n, "bucket": (ids >= n) & (counts >= 2) & (counts <= DIM + 2), "split": (ids >= n) & (counts > DIM + 2)}[kind]
    return int(np.flatnonzero(mask)[0])


FAULTS = {
    "an item node does not count 1": lambda a, n: a.__setitem__((_first(a, n, "item"), 0), 3),
    "an item's vector is not finite": lambda a, n: a.__setitem__((_first(a, n, "item"), 5), 0x7FC00000),
    "counts no item or more": lambda a, n: a.__setitem__((_first(a, n, "bucket"), 0), -1),
    "lists an id that is not an item": lambda a, n: a.__setitem__((_first(a, n, "bucket"), 1), 10**9),
    "child is not an earlier node": lambda a, n: a.__setitem__((_first(a, n, "split"), 1), len(a) - 1),
    "not its children's sum": lambda a, n: a.__setitem__((_first(a, n, "split"), 0), a[_first(a, n, "split"), 0] + 1),
    "hyperplane is not finite": lambda a, n: a.__setitem__((_first(a, n, "split"), 4), 0x7F800000),
    "it is not a root": None,  # a sound bucket of one item appended after the roots
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_each_fault_of_the_layout_is_a_one_line_error_naming_it(tmp_path, fault):
    n = 700
    nodes = _nodes(_annoy(tmp_path / "a.ann", n, 6))
    if FAULTS[fault] is None:
        nodes = np.vstack([nodes, np.eye(1, nodes.shape[1], 0, dtype=np.int32)])
    else:
        FAULTS[fault](nodes, n)
    nodes.tofile(tmp_path / "bad.ann")
    with pytest.raises(RetrievalError, match=fault) as error:
        check_annoy_file(tmp_path / "bad.ann", DIM, n)
    assert "\n" not in str(error.value) and "rebuild" in str(error.value)


def test_a_file_that_is_not_a_whole_number_of_nodes_or_holds_no_tree_is_refused(tmp_path):
    path = _annoy(tmp_path / "a.ann", 50, 2)
    path.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(RetrievalError, match="whole number"):
        check_annoy_file(path, DIM, 50)
    path.write_bytes(b"\0" * node_size(DIM) * 50)
    with pytest.raises(RetrievalError, match="no tree"):
        check_annoy_file(path, DIM, 50)


def test_random_damage_is_refused_or_harmless_never_a_crash(tmp_path):
    """One int32 of a real file replaced by a hostile value, 150 times: whatever the check lets
    through, Annoy searches without dying (searched in a child process, which a crash would kill)."""
    n = 300
    base = _nodes(_annoy(tmp_path / "a.ann", n, 4))
    rng = np.random.default_rng(1)
    passed = []
    for trial in range(150):
        nodes = base.copy()
        nodes.flat[rng.integers(0, nodes.size)] = [-1, 10**9, int(rng.integers(0, 2 * len(nodes))), 0x7FC00000][trial % 4]
        nodes.tofile(tmp_path / f"t{trial}.ann")
        try:
            check_annoy_file(tmp_path / f"t{trial}.ann", DIM, n)
            passed.append(str(tmp_path / f"t{trial}.ann"))
        except RetrievalError:
            pass
    code = ("import sys, numpy as np; from annoy import AnnoyIndex\n"
            "for path in sys.argv[1:]:\n"
            f"    a = AnnoyIndex({DIM}, 'angular'); a.load(path)\n"
            f"    [a.get_nns_by_vector(v.tolist(), 10, search_k=2000) for v in np.random.default_rng(0).normal(size=(20, {DIM}))]\n")
    done = subprocess.run([sys.executable, "-c", code, *passed], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-500:]
    assert 10 < len(passed) < 140  # both kinds occurred


# ----------------------------------------------------------------------------- through the CLI


@pytest.fixture(scope="module")
def large_run(tmp_path_factory):
    """A run with a 5 MB index (6000 items of dimension 64, 50 trees): its trees' nodes lie between
    the first and the last MiB, where the check of older versions did not look."""
    root = tmp_path_factory.mktemp("large")
    run = save_tiny_run(root / "run", dim=64)
    gallery = write_images(root / "gallery", ["a"], 4)
    large_index(run, gallery, 6000)
    return run, gallery


def _search(run, image, *extra):
    done = subprocess.run([sys.executable, "-m", "retrieval", "search", str(run), str(image), "--device", "cpu", *extra],
                          capture_output=True, text=True, timeout=300)
    return done.returncode, [line for line in done.stderr.splitlines() if line.strip()]


def _damage_middle(path, fill: bytes):
    """Overwrite 128 KiB at 60 % of the file (split and bucket nodes), through its documented name."""
    data = bytearray(path.read_bytes())
    middle = len(data) * 6 // 10
    assert 1 << 20 < middle < len(data) - (1 << 20)
    data[middle - (1 << 16) : middle + (1 << 16)] = fill * ((1 << 17) // len(fill))
    with open(path, "r+b") as handle:
        handle.write(bytes(data))


def test_damage_in_the_middle_of_a_large_index_is_a_one_line_error_not_an_abort(tmp_path, large_run):
    # before the full check, this search died with std::length_error (exit 134): the first and last MiB were intact
    run = tmp_path / "run"
    shutil.copytree(large_run[0], run, symlinks=True)
    assert (run / "index" / "gallery.ann").stat().st_size > 4 << 20
    _damage_middle(run / "index" / "gallery.ann", b"\xff")
    code, lines = _search(run, large_run[1] / "a" / "0_0.png")
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error:"), lines
    assert "not a sound Annoy index" in lines[0] and "index/gallery.ann" in lines[0]


def test_a_crafted_index_with_matching_hashes_is_refused_by_its_layout(tmp_path, large_run, monkeypatch):
    from retrieval.cli import main

    run = tmp_path / "run"
    shutil.copytree(large_run[0], run, symlinks=True)
    ann, meta = run / "index" / "gallery.ann", run / "index" / "gallery.json"
    _damage_middle(ann, b"\x00\x00\x00\x40")  # counts of 2^30: a crafted file
    metadata = json.loads(meta.read_text())
    metadata["files"]["gallery.ann"]["sha256"] = hashlib.sha256(ann.read_bytes()).hexdigest()
    meta.write_text(json.dumps(metadata))
    monkeypatch.setattr(sys, "argv", ["retrieval", "search", str(run), str(large_run[1] / "a" / "0_0.png"), "--device", "cpu"])
    with pytest.raises(SystemExit) as exit:
        main()
    assert exit.value.code == 2


def test_a_damaged_vector_with_a_sound_layout_is_caught_by_the_full_hash(tmp_path, large_run):
    run = tmp_path / "run"
    shutil.copytree(large_run[0], run, symlinks=True)
    ann = run / "index" / "gallery.ann"
    nodes = _nodes(ann, 64)
    nodes[len(nodes) // 3, 10] ^= 1  # one bit of one item's vector, past the first MiB
    with open(ann, "r+b") as handle:
        handle.write(nodes.tobytes())
    with pytest.raises(RetrievalError, match="does not match gallery.json"):
        GalleryIndex.load(run, load_model=False)


def test_an_index_from_before_the_full_hash_loads_and_still_gets_the_layout_check(tmp_path, indexed_run):
    from retrieval.index.metadata import _head_tail_check

    run = tmp_path / "run"
    shutil.copytree(indexed_run, run, symlinks=True)
    meta = run / "index" / "gallery.json"
    metadata = json.loads(meta.read_text())
    for name in ("gallery.ann", "embeddings.npy"):
        metadata["files"][name] = _head_tail_check(run / "index" / name)  # as older builds recorded it
    meta.write_text(json.dumps(metadata))
    assert len(GalleryIndex.load(run, load_model=False).search(np.ones(8, np.float32), k=3)) == 3
    nodes = _nodes(run / "index" / "gallery.ann")
    nodes[-1, 0] = -7
    nodes.tofile(run / "index" / "gallery.ann")
    with pytest.raises(RetrievalError, match="not a sound Annoy index"):
        GalleryIndex.load(run, load_model=False)


def test_the_build_records_the_full_sha256_of_both_data_files(indexed_run):
    metadata = json.loads((indexed_run / "index" / "gallery.json").read_text())
    for name in ("gallery.ann", "embeddings.npy"):
        data = (indexed_run / "index" / name).read_bytes()
        assert metadata["files"][name] == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
