"""Distributed training (retrieval.distributed) on CPU: 2 processes with gloo on localhost.

Shown here: the gather's gradient scale; for every objective, one DDP step on shares of a batch
equals one process on the whole batch (loss, gradients, mining record); a 2-process run (with
BatchNorm frozen, the one layer that depends on the split) and its --resume equal one process;
``torchrun -m retrieval train`` and ``index`` write a usable run and index; a dead process gives
a clear error, not a hang.
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import TINY
from distributed_workers import run_processes, session_worker
from retrieval import distributed
from retrieval.data import build_transforms, scan_folder
from retrieval.embed import embed_readable
from retrieval.errors import RetrievalError
from retrieval.model import EmbeddingModel
from retrieval.run import load_model
from retrieval.run import mining_epochs, read_metrics, read_mining_log
from retrieval.training import TrainConfig, build_objective, train
from retrieval.training.seeded_items import KeyedBatches

OBJECTIVES = ["triplet", "contrastive", "lifted", "npair", "nce", "infonce"]
# The 2-epoch run compared with one process uses a smooth objective. A margin miner's choices are
# discrete: float32 sums in another order (per share, then across processes) can move a triplet
# across the semihard boundary, after which the runs differ by about the learning rate (seen: a
# last-bit change of the input normalisation did that to triplet + semihard). Each objective's
# gradients are compared exactly, one step at a time, in test_one_ddp_step_equals_one_process...
RUN = {"loss": "infonce"}
MARGIN = 0.5  # wide enough that semihard mining finds triplets in a random model's batch
TINY = {**TINY, "device": "cpu"}


@pytest.fixture(scope="module")
def global_batch(tmp_path_factory):
    """A P×K batch (4 classes × 3 images) of random 32 px images, with dataset indices 100…111."""
    generator = torch.Generator().manual_seed(1)
    batch = {
        "images": torch.randn(12, 3, 32, 32, generator=generator),
        "labels": torch.arange(4).repeat_interleave(3),
        "indices": torch.arange(100, 112),
    }
    path = tmp_path_factory.mktemp("batch") / "batch.pt"
    torch.save(batch, path)
    return batch, path


@pytest.fixture(scope="module")
def two_processes(global_batch, sample, tmp_path_factory):
    """One session of 2 processes (see distributed_workers.session_worker): one step of each
    objective; a 2-epoch run that rank 0 stops by Ctrl-C after epoch 1 and --resume finishes,
    with BatchNorm frozen; the index of the test folder; then rank 1 dies (exit code 3)."""
    _, path = global_batch
    out = tmp_path_factory.mktemp("two-processes")
    config = dict(data_dir=sample / "train", out=out / "run", epochs=2, **TINY, **RUN)
    runs = [(config, 1), ({**config, "resume": True}, None)]
    codes = run_processes(session_worker, str(out), str(path), OBJECTIVES, MARGIN, runs, str(sample / "test"), timeout=240)
    assert codes == [0, 3], f"processes exited with {codes}"
    return out


def one_process_step(batch, loss_name):
    torch.manual_seed(0)
    model = EmbeddingModel("resnet10t", 16).double()
    model.eval()
    config = TrainConfig(data_dir=".", out=".", loss=loss_name, margin=MARGIN, hardest_per_epoch=10)
    loss_fn, miner, record_miner = build_objective(config, None)
    embeddings = model.forward_unnormalised(batch["images"].double())
    mined = miner(embeddings, batch["labels"], batch["indices"]) if miner is not None else None
    value = loss_fn(embeddings, batch["labels"], mined)
    value.backward()
    record = (mined if mined is not None else record_miner(embeddings.detach(), batch["labels"], batch["indices"])).record
    return float(value.detach()), {name: p.grad for name, p in model.named_parameters()}, record.hardest


@pytest.mark.slow
def test_gather_backward_returns_world_size_times_the_local_gradient(two_processes):
    out = two_processes
    for rank in range(2):
        result = torch.load(out / f"scale_rank{rank}.pt")
        assert result["gathered"].tolist() == [[1.0] * 3, [1.0] * 3, [2.0] * 3]  # rank 0's 2 rows, then rank 1's
        weights = torch.arange(9, dtype=torch.float32).reshape(3, 3)
        mine = weights[:2] if rank == 0 else weights[2:]
        # loss = sum(w * gathered) on both ranks; DDP's mean over ranks then gives exactly w
        assert torch.equal(result["grad"], result["world_size"] * mine)


@pytest.mark.slow
@pytest.mark.parametrize("loss_name", OBJECTIVES)
def test_one_ddp_step_equals_one_process_on_the_global_batch(two_processes, global_batch, loss_name):
    batch, _ = global_batch
    ranks = [torch.load(two_processes / f"step_rank{rank}.pt") for rank in range(2)]
    loss, grads, hardest = one_process_step(batch, loss_name)
    assert sum(g.abs().sum() for g in grads.values()) > 0, "the reference step must have gradients to compare"
    for rank, results in enumerate(ranks):
        result = results[loss_name]
        assert result["indices"] == batch["indices"].tolist(), "the gathered batch is in the sampler's order"
        assert result["labels"] == batch["labels"].tolist()
        assert result["loss"] == pytest.approx(loss, rel=1e-10, abs=1e-12)
        for name, expected in grads.items():
            assert torch.allclose(result["grads"][name], expected, rtol=1e-8, atol=1e-12), (rank, name)
        assert [(h["anchor"], h["positive"], h["negative"]) for h in result["hardest"]] == \
            [(h["anchor"], h["positive"], h["negative"]) for h in hardest]


@pytest.mark.slow
def test_two_process_training_ctrl_c_resume_and_index_equal_one_process_with_frozen_batchnorm(two_processes, sample, tmp_path, monkeypatch):
    # the processes: rank 0 pressed Ctrl-C after epoch 1, both stopped, --resume finished epoch 2,
    # then both embedded the test folder for rank 0's index. Here: the same run in one process.
    monkeypatch.setattr(torch.nn.modules.batchnorm._BatchNorm, "train", lambda self, mode=True: torch.nn.Module.train(self, False))
    train(TrainConfig(data_dir=sample / "train", out=tmp_path / "one", epochs=2, **TINY, **RUN), progress=False)
    ddp, one = two_processes / "run", tmp_path / "one"
    a, b = load_file(str(ddp / "model_last.safetensors")), load_file(str(one / "model_last.safetensors"))
    for name in b:
        # float32 sums in another order (per share, then across processes) differ in the last bits,
        # and Adam's per-element normalisation magnifies that where a gradient is near 0: a few
        # weights differ by up to ~1e-4, each large tensor as a whole by ~1e-5 (relative), and a
        # small one (a BatchNorm bias of norm 0.03) by ~4e-6 absolute. Images loaded or augmented
        # differently would move many weights by about the learning rate (1e-3) instead.
        difference = (a[name].double() - b[name].double()).norm()
        assert difference <= 1e-4 * b[name].double().norm() + 1e-5, name
    rows_ddp, rows_one = read_metrics(ddp), read_metrics(one)
    assert [r["epoch"] for r in rows_ddp] == [0, 1, 2]
    for row_ddp, row_one in zip(rows_ddp, rows_one):
        for key in ("loss", "recall_at_1", "map_at_r", "active_fraction", "violating_fraction", "mean_d_ap", "mean_d_an", "lr"):
            expected = row_one[key]
            assert row_ddp[key] == (expected if expected is None else pytest.approx(expected, rel=1e-4, abs=1e-6)), (row_ddp["epoch"], key)
    for epoch in (1, 2):
        paths = lambda rows: [(r["anchor_path"], r["positive_path"], r["negative_path"]) for r in rows]
        assert paths(read_mining_log(ddp, epoch)) == paths(read_mining_log(one, epoch))
    config_json = json.loads((ddp / "config.json").read_text())
    assert config_json["distributed"] == {"world_size": 2, "backend": "gloo"}

    # the index rank 0 built from both processes' shares is the one-process index
    model, run_config = load_model(ddp)
    folder = scan_folder(sample / "test")
    # the precision build_index uses by default ("auto"; embed_readable's own default is fp32)
    expected, kept = embed_readable(model, folder.paths, build_transforms(run_config["data_config"], train=False), batch_size=4,
                                    device="cpu", precision="auto")
    stored = np.load(ddp / "index" / "embeddings.npy")
    assert kept == list(range(18)) and np.allclose(stored, expected, atol=1e-6)
    metadata = json.loads((ddp / "index" / "gallery.json").read_text())
    assert metadata["n_items"] == 18 and metadata["items"]["path"] == [folder.relative_path(i) for i in range(18)]


def torchrun(*args, timeout=150):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "retrieval", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_torchrun_trains_a_usable_run_directory(sample, tmp_path):
    run = tmp_path / "run"
    done = torchrun("train", str(sample / "train"), "--out", str(run), "--epochs", "2", "--backbone", "resnet10t",
                    "--image-size", "32", "--embedding-dim", "16", "-P", "4", "-K", "3", "--workers", "0",
                    "--device", "cpu", "--precision", "fp32", "--hardest", "10", "--quiet", "--dist-timeout", "60")
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("epoch 1:") == 1 and done.stdout.count("epoch 2:") == 1, done.stdout  # rank 0 reports
    assert done.stdout.count("next: retrieval index") == 1, done.stdout
    model, config = load_model(run)
    assert config["distributed"] == {"world_size": 2, "backend": "gloo"} and config["train_settings"]["dist_timeout"] == 60
    rows = read_metrics(run)
    assert [r["epoch"] for r in rows] == [0, 1, 2] and all(isinstance(r["map_at_r"], float) for r in rows)
    assert mining_epochs(run) == [1, 2]
    for row in read_mining_log(run, 2):
        assert row["anchor_label"] == row["positive_label"] != row["negative_label"]
        assert (sample / "train" / row["negative_path"]).is_file()
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 16)


@pytest.mark.slow
def test_torchrun_indexes_a_face_gallery_as_one_process_does(tmp_path):
    """Each process detects a share of the photos first (retrieval.faces.run_faces.find_share),
    then reads the others' from the run's cache: the index is the one-process index."""
    import shutil

    sys.path.insert(0, str(Path(__file__).resolve().parent / "faces"))
    from faces_helpers import SCENES, dataset, make_face_folder, make_face_run
    from retrieval.index import build_index

    run = make_face_run(tmp_path)
    gallery = make_face_folder(tmp_path / "gallery", n_classes=2, per_class=2, no_face=1)
    for name in ("000", "001", "002"):
        (gallery / "party").mkdir(exist_ok=True)
        shutil.copy(dataset(SCENES / "pairs" / f"{name}.jpg"), gallery / "party" / f"{name}.jpg")
    one = tmp_path / "one"
    shutil.copytree(run, one)
    build_index(one, gallery, device="cpu", n_trees=2)
    done = torchrun("index", str(run), str(gallery), "--n-trees", "2", "--device", "cpu", "--quiet", "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count('"n_items"') == 1, done.stdout  # rank 0 reports
    two, single = (json.loads((r / "index" / "gallery.json").read_text())["items"] for r in (run, one))
    assert two["path"] == single["path"] and len(two["path"]) == 4 + 6, "two crops a person and two faces a photo"
    assert all(a["box"] == pytest.approx(b["box"], abs=0.01) for a, b in zip(two["face"], single["face"]))
    assert np.allclose(np.load(run / "index" / "embeddings.npy"), np.load(one / "index" / "embeddings.npy"), atol=1e-5)


@pytest.mark.slow
def test_torchrun_trains_a_face_run_its_processes_sharing_the_search(tmp_path):
    sys.path.insert(0, str(Path(__file__).resolve().parent / "faces"))
    from faces_helpers import make_face_folder
    from retrieval.faces.run_faces import training_photo_names

    data = make_face_folder(tmp_path / "data", n_classes=4, per_class=3, no_face=1)
    run = tmp_path / "run"
    done = torchrun("train", str(data), "--out", str(run), "--faces", "--epochs", "1", "--backbone", "resnet10t",
                    "--image-size", "32", "--embedding-dim", "16", "-P", "2", "-K", "2", "--workers", "0", "--val-fraction", "0.25",
                    "--device", "cpu", "--precision", "fp32", "--quiet", "--dist-timeout", "60")
    assert done.returncode == 0, done.stderr[-3000:]
    model, config = load_model(run)
    assert config.faces is not None and config["distributed"]["world_size"] == 2
    assert len(training_photo_names(run)) == 12, "every photo with a face"
    assert mining_epochs(run) == [1] and model(torch.zeros(1, 3, 32, 32)).shape == (1, 16)


@pytest.mark.slow
def test_a_dead_process_ends_the_run_with_a_clear_message(two_processes):
    seconds, message = (two_processes / "dying_rank0.txt").read_text().split("\n", 1)
    assert message.startswith("rank 0 of 2: lost the other processes") and "--resume" in message, message
    assert "\n" not in message and float(seconds) < 30  # one line, at once rather than after the 60 s timeout


# ----------------------------------------------------------------------------- without processes


def test_the_cli_prints_lost_processes_as_one_line_and_leaves_without_torchs_teardown():
    """A process whose peer died prints the message and ends with status 2 at once: atexit
    handlers (where torch's teardown would run) are skipped, and nothing printed is lost."""
    script = (
        "import atexit, sys\n"
        "import retrieval.cli as cli\n"
        "from retrieval.errors import LostProcesses\n"
        "atexit.register(lambda: sys.stderr.write('teardown ran\\n'))\n"
        "def fail(**options):\n"  # main() calls app(standalone_mode=False)
        "    print('output before', flush=False)\n"
        "    raise LostProcesses('rank 0 of 2: lost the other processes (Connection closed by peer)')\n"
        "cli.app = fail\n"
        "cli.main()\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stdout == "output before\n"  # flushed before leaving
    assert done.stderr == "error: rank 0 of 2: lost the other processes (Connection closed by peer)\n"


def test_each_process_loads_a_strided_share_keyed_by_global_position():
    from retrieval.data import PKSampler

    labels = [c for c in range(6) for _ in range(4)]
    sampler = PKSampler(labels, 3, 2, seed=5)
    whole = list(KeyedBatches(sampler, 5))
    shares = [list(KeyedBatches(sampler, 5, shard=(rank, 2))) for rank in range(2)]
    for step, batch in enumerate(whole):
        assert shares[0][step] == batch[0::2] and shares[1][step] == batch[1::2]


def test_strided_shares_go_back_in_batch_order():
    order = distributed._strided_order([3, 2], 2)  # rank 0 holds positions 0, 2, 4; rank 1 holds 1, 3
    gathered = torch.tensor([0, 2, 4, 1, 3])
    assert gathered[order].tolist() == [0, 1, 2, 3, 4]
    assert distributed._strided_order([3, 1], 2) is None  # an image was dropped: keep rank order


def test_without_torchrun_the_context_is_a_single_process(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with distributed.process_group("cpu") as ctx:
        assert not ctx.enabled and ctx.is_main and ctx.world_size == 1
        x = torch.ones(3, 2)
        assert ctx.gather_batch(x, torch.zeros(3), torch.arange(3))[0] is x
        assert ctx.any(True) and not ctx.any(False)
        model = EmbeddingModel("resnet10t", 8)
        assert ctx.wrap_model(model) == model.forward_unnormalised


def test_a_batch_too_small_to_share_is_refused():
    ctx = distributed.DistributedContext(rank=0, world_size=4, backend="gloo")
    with pytest.raises(RetrievalError, match="at least 8"):
        ctx.require_batch(6)


def test_sync_bn_on_cpu_is_refused():
    ctx = distributed.DistributedContext(rank=0, world_size=2, backend="gloo")
    with pytest.raises(RetrievalError, match="--sync-bn needs CUDA"):
        ctx.wrap_model(EmbeddingModel("resnet10t", 8), sync_bn=True)
