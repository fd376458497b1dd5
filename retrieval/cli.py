"""The ``retrieval`` command line: thin typer commands that parse, call the library and print.

Every command has ``--help``. A :class:`~retrieval.errors.RetrievalError` (bad input) is printed
as one line on stderr with exit status 2; commands that report numbers take ``--json`` and then
print exactly one JSON object on stdout.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from retrieval.errors import RetrievalError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Metric-learning image retrieval: train, index, search, evaluate and inspect embedding models.",
)


@app.command("sample-data")
def sample_data_command(
    out_dir: Path = typer.Argument(..., help="Where to write train/, test/ and catalog/ (e.g. sample_data/products)."),
    seed: int = typer.Option(0, help="Seed: the same seed gives byte-identical images."),
    force: bool = typer.Option(False, "--force", help="Regenerate even when OUT_DIR already holds this seed's sample data."),
    train_classes: int = typer.Option(24, "--train-classes", min=1, help="Number of training classes."),
    test_classes: int = typer.Option(12, "--test-classes", min=1, help="Number of held-out test classes."),
    images_per_class: int = typer.Option(20, "--images-per-class", min=2, help="Photos per class."),
    image_size: int = typer.Option(64, "--image-size", min=16, max=512, help="Image side in pixels."),
    json_output: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Generate the project's own small labelled product data set (train / test / catalog).

    Skips the work when OUT_DIR already holds the same seed's output; --force regenerates it.
    """
    import json

    from retrieval.sample_data import generate_sample_data

    summary = generate_sample_data(
        out_dir,
        seed=seed,
        n_train_classes=train_classes,
        n_test_classes=test_classes,
        images_per_class=images_per_class,
        image_size=image_size,
        force=force,
    )
    if json_output:
        typer.echo(json.dumps(summary))
        return
    if summary["skipped"]:
        typer.echo(f"{out_dir} already holds the sample data for seed {seed}; nothing to do (--force regenerates).")
    else:
        typer.echo(
            f"wrote {summary['n_train_images']} train photos ({summary['n_train_classes']} classes), "
            f"{summary['n_test_images']} test photos ({summary['n_test_classes']} classes) and "
            f"{summary['n_catalog_images']} catalogue images to {out_dir} in {summary['seconds']:.1f} s"
        )
    typer.echo(f"next: retrieval train {out_dir / 'train'} --out models/demo --image-size {image_size}")


def _default(value) -> str:
    """An option's default for its help text, as typer shows one (the brackets escaped from rich markup).
    For ``train``, TrainConfig.resolve() applies the defaults; tests check that the two agree."""
    return f"\\[default: {value}]"


@app.command("train")
def train_command(
    data_dir: Path = typer.Argument(..., help="Labelled folder: DATA_DIR/<class>/<image> (with --unlabelled or --pairs also a flat folder of images)."),
    out: Path = typer.Option(..., "--out", help="Run directory to write (models/NAME)."),
    # Every option is None unless typed: TrainConfig.resolve() fills the defaults (one place, shown here as "[default: ...]").
    backbone: Optional[str] = typer.Option(None, help=f"A timm model name. {_default('resnet18')}"),
    pretrained: Optional[bool] = typer.Option(None, "--pretrained", help="Start from the backbone's pretrained weights (downloads them)."),
    weights: Optional[Path] = typer.Option(None, "--weights", help="Local .safetensors backbone weights (offline machines)."),
    embedding_dim: Optional[int] = typer.Option(None, help=f"Embedding size D. {_default(128)}"),
    image_size: Optional[int] = typer.Option(None, help=f"Square input size in pixels. {_default(128)}"),
    loss: Optional[str] = typer.Option(None, help=f"triplet | contrastive | lifted | npair | nce | infonce. {_default('triplet; infonce with --unlabelled')}"),
    miner: Optional[str] = typer.Option(None, help=f"Triplet miner all | hard | semihard | easy | batch-hard | batch-semihard, pair miner pair-all | pair-active | pair-hard | pair-batch-hard, or none. {_default('semihard for triplet, none otherwise')}"),
    margin: Optional[float] = typer.Option(None, help=f"Margin ε in distance units (0 to 2), for triplet, contrastive, lifted and the miners. {_default(0.2)}"),
    temperature: Optional[float] = typer.Option(None, help=f"Temperature τ for nce and infonce. {_default(0.1)}"),
    epochs: Optional[int] = typer.Option(None, help=f"Epochs; 0 writes the untrained model (a baseline). {_default(10)}"),
    classes_per_batch: Optional[int] = typer.Option(None, "--classes-per-batch", "-P", help=f"P: classes per batch. {_default(16)}"),
    images_per_class: Optional[int] = typer.Option(None, "--images-per-class", "-K", help=f"K: images per class in a batch. {_default(4)}"),
    lr: Optional[float] = typer.Option(None, help=f"AdamW learning rate (cosine schedule); the backbone gets a tenth when pretrained. {_default(0.001)}"),
    val_fraction: Optional[float] = typer.Option(None, help=f"Fraction of classes held out for validation. {_default(0.2)}"),
    seed: Optional[int] = typer.Option(None, help=f"Seed for the split, the sampler, augmentation and initialisation. {_default(0)}"),
    device: Optional[str] = typer.Option(None, help=f"auto | cpu | cuda. {_default('auto')}"),
    precision: Optional[str] = typer.Option(None, help=f"auto | fp32 | bf16 | fp16 (auto: bf16 where the CPU or GPU supports it). {_default('auto')}"),
    workers: Optional[int] = typer.Option(None, "--workers", help="Data-loader worker processes (default: chosen for this machine)."),
    cache_mb: Optional[float] = typer.Option(None, "--cache-mb", help=f"MiB of decoded training images kept in memory (split between loader workers), so later epochs skip decoding; 0 turns it off. {_default(1024.0)}"),
    augment: Optional[float] = typer.Option(None, help=f"Augmentation strength (0 = none). {_default(1.0)}"),
    class_groups: Optional[Path] = typer.Option(None, "--class-groups", help="CSV mapping class -> group (e.g. grocery classes.csv)."),
    groups_per_batch: Optional[int] = typer.Option(None, help="Draw each batch's classes from this many groups."),
    negatives: Optional[str] = typer.Option(None, help=f"all | same-group | prefer-same-group: which classes count as negatives (groups from --class-groups). {_default('all')}"),
    never_negative: Optional[Path] = typer.Option(None, "--never-negative", help="CSV of class pairs that are never negatives."),
    hardest: Optional[int] = typer.Option(None, help=f"Hardest triplets logged per epoch in mining/. {_default(50)}"),
    resume: Optional[bool] = typer.Option(None, "--resume", help="Continue the run in --out from its last checkpoint."),
    sync_bn: Optional[bool] = typer.Option(None, "--sync-bn", help="Under torchrun: BatchNorm uses the statistics of the whole batch across processes (SyncBatchNorm, CUDA only); else each process normalises its own share."),
    dist_timeout: Optional[float] = typer.Option(None, "--dist-timeout", help=f"Under torchrun: seconds to wait for the other processes before the run stops with an error. {_default(300.0)}"),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
    unlabelled: Optional[bool] = typer.Option(None, "--unlabelled", help="Self-supervised: two augmented views of each image are its positive pair, the batch's other images its negatives; class folders, if any, only hold out validation classes."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="With --unlabelled: distinct images per batch (default P*K/2; each gives two views)."),
    pairs: Optional[Path] = typer.Option(None, "--pairs", help="CSV of image pairs known to match (paths relative to DATA_DIR): linked images are positives; unpaired is unknown, not negative."),
    pair_negatives: Optional[str] = typer.Option(None, "--pair-negatives", help=f"With --pairs: random (batches of random linked groups) | hard (batches of each other's nearest not-linked groups, re-found every epoch). {_default('random')}"),
    pair_groups: Optional[Path] = typer.Option(None, "--pair-groups", help="With --pairs: CSV image,group; images of one group are never each other's negatives."),
) -> None:
    """Train an embedding model on a labelled folder (or, with --unlabelled / --pairs, without negative labels); writes the run directory."""
    from retrieval.training import TrainConfig, train

    _log_warnings()
    config = TrainConfig(
        data_dir=data_dir, out=out, backbone=backbone, pretrained=pretrained, weights=weights,
        embedding_dim=embedding_dim, image_size=image_size, loss=loss, miner=miner, margin=margin,
        temperature=temperature, epochs=epochs, classes_per_batch=classes_per_batch,
        images_per_class=images_per_class, lr=lr, val_fraction=val_fraction, seed=seed, device=device,
        precision=precision, num_workers=workers, cache_mb=cache_mb, augment=augment, class_groups=class_groups,
        groups_per_batch=groups_per_batch, negatives=negatives, never_negative=never_negative,
        hardest_per_epoch=hardest, resume=resume, sync_bn=sync_bn, dist_timeout=dist_timeout, command=" ".join(["retrieval"] + sys.argv[1:]),
        unlabelled=unlabelled, batch_size=batch_size, pairs=pairs, pair_negatives=pair_negatives, pair_groups=pair_groups,
    )

    def report(row: dict) -> None:
        typer.echo(
            f"epoch {row['epoch']}: loss {row['loss']:.4f}, active {_fmt(row.get('active_fraction'))}, "
            f"violating {_fmt(row.get('violating_fraction'))}, "
            f"val R@1 {_fmt(row.get('recall_at_1'))}, MAP@R {_fmt(row.get('map_at_r'))}, "
            f"{row['images_per_second']:.0f} img/s, {row['seconds']:.0f} s"
        )

    result = train(config, progress=not quiet, on_epoch=report)
    from retrieval.distributed import is_main_process

    if not is_main_process():  # under torchrun, rank 0 reports
        raise typer.Exit(130 if result.interrupted else 0)
    baseline = result.history[0] if result.history else {}
    typer.echo(
        f"untrained: val R@1 {_fmt(baseline.get('recall_at_1'))}, MAP@R {_fmt(baseline.get('map_at_r'))}; "
        f"best epoch {result.best_epoch}. Run written to {out}"
    )
    if result.interrupted:
        raise typer.Exit(130)
    typer.echo(f"next: retrieval index {out} GALLERY_DIR   (then: retrieval app {out})")


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def _log_warnings() -> None:
    """Send the library's warnings (logger ``retrieval``) to stderr as one line each."""
    import logging

    logger = logging.getLogger("retrieval")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("warning: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.WARNING)
        logger.propagate = False


@app.command("evaluate")
def evaluate_command(
    run_dir: Path = typer.Argument(..., help="A run directory written by `retrieval train`."),
    data_dir: Optional[Path] = typer.Argument(None, help="Labelled folder, evaluated leave-one-out."),
    query: Optional[Path] = typer.Option(None, "--query", help="Labelled query folder (with --gallery)."),
    gallery: Optional[Path] = typer.Option(None, "--gallery", help="Labelled gallery folder (with --query)."),
    device: str = typer.Option("auto", help="auto | cpu | cuda."),
    batch_size: int = typer.Option(64, help="Images per embedding batch."),
    json_output: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Recall@1/5/10, Precision@10 and MAP@R (exact search): leave-one-out on DATA_DIR, or --query against --gallery."""
    import json

    from retrieval.evaluate import evaluate_run

    _log_warnings()
    metrics = evaluate_run(run_dir, data_dir, query_dir=query, gallery_dir=gallery, device=device, batch_size=batch_size)
    if json_output:
        typer.echo(json.dumps(metrics))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{run_dir}: " + (f"{query} → {gallery}" if query else f"{data_dir} (leave-one-out)"))
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in metrics.items():
        if isinstance(value, dict):  # tar_at_far: one row a FAR
            for far, tar in value.items():
                table.add_row(f"tar_at_far {far}", _fmt(tar))
        else:
            table.add_row(key, f"{value:.4f}" if isinstance(value, float) else ("-" if value is None else str(value)))
    Console().print(table)


@app.command("calibrate")
def calibrate_command(
    run_dir: Path = typer.Argument(..., help="A run directory written by `retrieval train`."),
    data_dir: Path = typer.Argument(..., help="Labelled folder of classes the model did not train on."),
    target_far: float = typer.Option(0.01, "--target-far", help="False accepts allowed: the share of different-class pairs with d <= threshold."),
    device: str = typer.Option("auto", help="auto | cpu | cuda."),
    json_output: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Choose the run's same / different threshold on every pair of DATA_DIR at --target-far and store it in config.json."""
    import json

    from retrieval.evaluate import calibrate_run

    _log_warnings()
    stored = calibrate_run(run_dir, data_dir, target_far=target_far, device=device)
    if json_output:
        typer.echo(json.dumps(stored))
        return
    typer.echo(
        f"threshold {stored['threshold']:.4f} at FAR {stored['far']:.4f} (target {target_far:g}), TAR {stored['tar']:.4f}, "
        f"EER {stored['eer']:.4f} on {stored['n_positive_pairs']} same-class and {stored['n_negative_pairs']} "
        f"different-class pairs; written to {Path(run_dir) / 'config.json'}"
    )


@app.command("verify")
def verify_command(
    run_dir: Path = typer.Argument(..., help="A run directory written by `retrieval train`."),
    image_a: Path = typer.Argument(..., help="The first image."),
    image_b: Path = typer.Argument(..., help="The second image."),
    device: str = typer.Option("cpu", help="cpu | cuda | auto."),
    json_output: bool = typer.Option(False, "--json", help='Print one JSON object: {"distance", "threshold", "same", "far"}.'),
) -> None:
    """Same identity / product or not: the distance of two images against the run's threshold."""
    import json

    from retrieval.evaluate import verify_images

    _log_warnings()
    result = verify_images(run_dir, image_a, image_b, device=device)
    if json_output:
        typer.echo(json.dumps(result))
        return
    if result["threshold"] is None:
        typer.echo(f"d = {result['distance']:.4f}; no threshold is set for this run, so no verdict "
                   f"(set one with `retrieval calibrate {run_dir} DATA_DIR`)")
        return
    verdict = "same" if result["same"] else "different"
    sign = "<=" if result["same"] else ">"
    typer.echo(f"{verdict}: d = {result['distance']:.4f} {sign} threshold {result['threshold']:.4f} "
               f"(chosen at FAR {result['target_far']:g}; {result['far']:.4f} on its pairs)")


@app.command("index")
def index_command(
    run_dir: Path = typer.Argument(..., help="A run directory written by `retrieval train`."),
    gallery_dir: Optional[Path] = typer.Argument(
        None, help="Folder of gallery images: labelled (GALLERY_DIR/<class>/<image>) or flat."
    ),
    add: Optional[Path] = typer.Option(
        None, "--add", help="Add this folder's images to the existing index (only they are embedded)."
    ),
    n_trees: Optional[int] = typer.Option(
        None, "--n-trees", help="Annoy trees (default 50; with --add: the index's own)."
    ),
    device: str = typer.Option("auto", help="auto | cpu | cuda."),
    batch_size: int = typer.Option(64, help="Images per embedding batch."),
    workers: Optional[int] = typer.Option(None, "--workers", help="Data-loader worker processes (default: chosen for this machine)."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
    json_output: bool = typer.Option(False, "--json", help="Print one JSON object (what was indexed)."),
) -> None:
    """Embed a gallery and build its Annoy index in RUN_DIR/index/ (or --add DIR to an existing one)."""
    import json
    import time

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from retrieval.distributed import is_main_process
    from retrieval.index import DEFAULT_N_TREES, add_to_index, build_index

    _log_warnings()
    if (gallery_dir is None) == (add is None):
        raise RetrievalError("give GALLERY_DIR to build a new index, or --add DIR to add to the existing one (not both)")
    stages = {"embed": "embedding images", "copy": "copying stored embeddings", "add": "loading vectors into Annoy",
              "build": "building Annoy trees"}
    progress = Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
        console=Console(stderr=True), disable=quiet or not is_main_process(),
    )
    tasks: dict[str, int] = {}

    def on_progress(stage: str, done: int, total: int) -> None:
        if stage not in tasks:
            tasks[stage] = progress.add_task(stages.get(stage, stage), total=total)
        progress.update(tasks[stage], completed=done, total=total)

    options = dict(batch_size=batch_size, device=device, num_workers=workers, on_progress=on_progress)
    started = time.perf_counter()
    with progress:
        if add is not None:
            metadata = add_to_index(run_dir, add, n_trees=n_trees, **options)
        else:
            metadata = build_index(run_dir, gallery_dir, n_trees=n_trees or DEFAULT_N_TREES, **options)
    if not is_main_process():  # under torchrun the other processes only embed their shares; rank 0 reports
        return
    summary = {
        "index": str(Path(run_dir) / "index"),
        "n_items": metadata["n_items"],
        "n_skipped": len(metadata.get("skipped", [])),
        "n_trees": metadata["n_trees"],
        "labelled": metadata["labelled"],
        "seconds": round(time.perf_counter() - started, 2),
    }
    if json_output:
        typer.echo(json.dumps(summary))
        return
    skipped = f" ({summary['n_skipped']} unreadable images skipped)" if summary["n_skipped"] else ""
    typer.echo(
        f"indexed {summary['n_items']} images{skipped} in {summary['index']} "
        f"with {summary['n_trees']} trees, {summary['seconds']:.1f} s"
    )
    typer.echo(f"next: retrieval search {run_dir} IMAGE   (or: retrieval app {run_dir})")


@app.command("search")
def search_command(
    run_dir: Path = typer.Argument(..., help="A run directory with an index (`retrieval index`)."),
    image: Path = typer.Argument(..., help="The query image."),
    k: int = typer.Option(10, "-k", "--k", min=1, help="Number of neighbours."),
    exact: bool = typer.Option(False, "--exact", help="Brute force over the stored embeddings (the reference) instead of Annoy."),
    search_k: Optional[int] = typer.Option(None, "--search-k", help="Annoy nodes to inspect (default: tuned for recall@10 >= 0.99)."),
    device: str = typer.Option("cpu", help="cpu | cuda | auto, for embedding the query."),
    json_output: bool = typer.Option(False, "--json", help='Print one JSON object: {"neighbours": [{"path", "label", "distance", "similarity", "match"}, ...], "verdict": {"match", "label", "distance", "threshold"}}.'),
) -> None:
    """Search the run's gallery index for the neighbours of IMAGE (distance = training's Euclidean distance)."""
    import json

    from retrieval.data import load_image
    from retrieval.index import GalleryIndex

    _log_warnings()
    query = load_image(image)
    gallery = GalleryIndex.load(run_dir, device=device)
    neighbours = gallery.search(query, k, exact=exact, search_k=search_k)
    verdict = gallery.verdict(neighbours)
    if json_output:
        typer.echo(json.dumps({"neighbours": [n.to_json() for n in neighbours], "verdict": verdict.to_json()}))
        return
    from rich.console import Console
    from rich.table import Table

    method = "exact" if exact else f"Annoy, {gallery.n_trees} trees"
    one_root = len(gallery.roots) == 1
    table = Table(
        title=f"{len(neighbours)} nearest to {image} ({method})",
        caption=f"paths relative to {gallery.roots[0]}" if one_root else None,
    )
    columns = [("#", "right"), ("path", "left"), ("label", "left"), ("distance", "right"), ("similarity", "right")]
    if gallery.threshold is not None:
        columns.append(("match", "left"))
    for column, justify in columns:
        table.add_column(column, justify=justify, overflow="fold")
    for rank, n in enumerate(neighbours, 1):
        shown = gallery.relative_paths[n.item] if one_root else n.path
        cells = [str(rank), shown, "-" if n.label is None else n.label, f"{n.distance:.4f}", f"{n.similarity:.4f}"]
        table.add_row(*cells, *(["yes" if n.match else "no"] if gallery.threshold is not None else []))
    Console().print(table)
    target = gallery.threshold.target_far if gallery.threshold is not None else None
    typer.echo(verdict.describe(target))


@app.command("mining")
def mining_command(
    run_dir: Path = typer.Argument(..., help="A run directory written by `retrieval train`."),
    epoch: Optional[int] = typer.Option(None, help="Epoch to show (default: the last one logged)."),
    top: int = typer.Option(20, help="How many triplets, hardest first."),
    json_output: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Show the hardest negatives that training mined: anchor, positive, negative, d_ap, d_an, margin violation."""
    import json

    from retrieval.run import read_config
    from retrieval.run import mining_epochs, read_mining_log

    if top < 1:
        raise RetrievalError(f"--top must be at least 1, got {top}")
    config = read_config(run_dir)
    rows = read_mining_log(run_dir, epoch)[:top]
    shown_epoch = epoch if epoch is not None else mining_epochs(run_dir)[-1]
    margin = float(config.get("margin", 0.0))
    for row in rows:
        row["margin_violation"] = margin - row["d_an_minus_d_ap"]
    if json_output:
        typer.echo(json.dumps({"epoch": shown_epoch, "margin": margin, "triplets": rows}))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{run_dir}: hardest mined triplets, epoch {shown_epoch} (margin {margin:g})")
    for column in ("anchor", "positive", "negative", "d_ap", "d_an", "violation"):
        table.add_column(column, justify="right" if column[0] in "dv" else "left")
    for row in rows:
        table.add_row(
            f"{row['anchor_label']}\n[dim]{row['anchor_path']}[/dim]",
            f"{row['positive_label']}\n[dim]{row['positive_path']}[/dim]",
            f"{row['negative_label']}\n[dim]{row['negative_path']}[/dim]",
            f"{row['d_ap']:.3f}", f"{row['d_an']:.3f}", f"{row['margin_violation']:+.3f}",
        )
    Console().print(table)
    typer.echo("violation = margin − (d_an − d_ap): positive means the negative lies inside the margin.")


@app.command("app")
def app_command(
    run_dir: Optional[Path] = typer.Argument(None, help="A run directory (else pick one of models/* in the app)."),
    port: int = typer.Option(8501, "--port", help="Port to serve the app on."),
    address: str = typer.Option("localhost", "--address", help="Address to listen on (0.0.0.0: reachable from other machines)."),
) -> None:
    """Start the Streamlit front end (search, hardest negatives, embedding map, training curves)."""
    import os

    import retrieval
    from retrieval.run import read_config

    if not 1 <= port <= 65535:
        raise RetrievalError(f"--port must be between 1 and 65535, got {port}")
    if run_dir is not None:
        read_config(run_dir)  # a clear one-line error for a missing folder / not a run directory
    script = Path(retrieval.__file__).resolve().parent.parent / "streamlit_app.py"
    if not script.is_file():
        raise RetrievalError(
            f"streamlit_app.py not found at {script}: the app runs from a source checkout "
            "installed with `pip install -e .` (as `make install` does)"
        )
    command = [
        sys.executable, "-m", "streamlit", "run", str(script),
        "--server.port", str(port), "--server.address", address, "--server.headless", "true",
        "--server.fileWatcherType", "none", "--browser.gatherUsageStats", "false",
        "--client.toolbarMode", "minimal",
    ]
    if run_dir is not None:
        command += ["--", str(run_dir.resolve())]
    shown = "localhost" if address in ("0.0.0.0", "::") else address
    typer.echo(f"Retrieval app{f' for {run_dir}' if run_dir is not None else ''}: http://{shown}:{port}  (Ctrl+C stops it)")
    sys.stdout.flush()
    os.execvp(command[0], command)


def main() -> None:
    """Console-script entry point: run the typer app, turning user errors into one line."""
    try:
        app()
    except RetrievalError as error:
        typer.secho(f"error: {error}", fg=typer.colors.RED, err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
