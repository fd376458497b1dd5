"""Training commands: ``retrieval sample-data`` and ``retrieval train``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from retrieval.cli.common import app, fmt, log_warnings


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

    Skips the work when OUT_DIR already holds the same seed's output at the same sizes; --force regenerates it.
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
    typer.echo(f"next: retrieval train {out_dir / 'train'} --out models/demo --backbone resnet10t --image-size {image_size} "
               "--epochs 40   (the quick start of the README)")


def _default(value) -> str:
    """An option's default for its help text, as typer shows one (the brackets escaped from rich markup).
    For ``train``, TrainConfig.resolve() applies the defaults; tests check that the two agree."""
    return f"\\[default: {value}]"


def _fine_tuning_default(scratch, pretrained) -> str:
    """The help text's default of a setting that differs between from-scratch runs and runs from
    pretrained weights (training.config's DEFAULTS and FINE_TUNING_DEFAULTS; tests check that they agree)."""
    return _default(f"{scratch}; {pretrained} from --pretrained / --weights")


@app.command("train")
def train_command(
    data_dir: Path = typer.Argument(..., help="Labelled folder: DATA_DIR/<class>/<image> (with --unlabelled or --pairs also a flat folder of images)."),
    out: Path = typer.Option(..., "--out", help="Run directory to write (models/NAME)."),
    # Every option is None unless typed: TrainConfig.resolve() fills the defaults (one place, shown here as "[default: ...]").
    backbone: Optional[str] = typer.Option(None, help=f"A timm model name. {_default('resnet18')}"),
    pretrained: Optional[bool] = typer.Option(None, "--pretrained", help="Start from the backbone's pretrained weights (downloads them)."),
    weights: Optional[Path] = typer.Option(None, "--weights", help="Local .safetensors backbone weights (offline machines)."),
    embedding_dim: Optional[int] = typer.Option(None, help=f"Embedding size D. {_fine_tuning_default(128, 512)}"),
    image_size: Optional[int] = typer.Option(None, help=f"Square input size in pixels. {_default('128; from --pretrained / --weights the size the backbone was pretrained at (timm: 224 for most)')}"),
    loss: Optional[str] = typer.Option(None, help=f"triplet | contrastive | lifted | npair | nce | infonce. {_default('triplet; infonce with --unlabelled or from --pretrained / --weights')}"),
    miner: Optional[str] = typer.Option(None, help=f"Triplet miner all | hard | semihard | easy | batch-hard | batch-semihard, pair miner pair-all | pair-active | pair-hard | pair-batch-hard, or none. {_default('semihard for triplet, none otherwise')}"),
    margin: Optional[float] = typer.Option(None, help=f"Margin ε in distance units (0 to 2: distances between unit embeddings), for triplet, contrastive, lifted and the miners. {_default(0.2)}"),
    temperature: Optional[float] = typer.Option(None, help=f"Temperature τ for nce and infonce. {_default(0.1)}"),
    epochs: Optional[int] = typer.Option(None, help=f"Epochs; 0 writes the untrained model (a baseline). {_default(10)}"),
    classes_per_batch: Optional[int] = typer.Option(None, "--classes-per-batch", "-P", help=f"P: classes per batch. {_default(16)}"),
    images_per_class: Optional[int] = typer.Option(None, "--images-per-class", "-K", help=f"K: images per class in a batch. {_default(4)}"),
    lr: Optional[float] = typer.Option(None, help=f"AdamW learning rate (cosine schedule); the backbone learns at --backbone-lr-scale of it. {_default(0.001)}"),
    val_fraction: Optional[float] = typer.Option(None, help=f"Fraction of classes held out for validation. {_default(0.2)}"),
    seed: Optional[int] = typer.Option(None, help=f"Seed for the split, the sampler, augmentation and initialisation. {_default(0)}"),
    device: Optional[str] = typer.Option(None, help=f"auto | cpu | cuda. {_default('auto')}"),
    precision: Optional[str] = typer.Option(None, help=f"auto | fp32 | bf16 | fp16 (auto: bf16 where the CPU or GPU supports it). {_default('auto')}"),
    workers: Optional[int] = typer.Option(None, "--workers", help="Data-loader worker processes (default: chosen for this machine)."),
    cache_mb: Optional[float] = typer.Option(None, "--cache-mb", help=f"MiB of decoded training images kept in memory (split between loader workers), so later epochs skip decoding; 0 turns it off. {_default(1024.0)}"),
    augment: Optional[float] = typer.Option(None, help=f"Augmentation strength (0 = none; with --faces 1 is a horizontal flip and a small similarity jitter, more adds colour at strength - 1). {_default(1.0)}"),
    class_groups: Optional[Path] = typer.Option(None, "--class-groups", help="CSV mapping class -> group (e.g. grocery classes.csv)."),
    groups_per_batch: Optional[int] = typer.Option(None, help=f"Draw each batch's classes from this many groups of --class-groups (from 1 to the training classes' groups, and at most -P). {_default('2 with --class-groups')}"),
    negatives: Optional[str] = typer.Option(None, help=f"all | same-group | prefer-same-group: which classes count as negatives (groups from --class-groups). {_default('all')}"),
    never_negative: Optional[Path] = typer.Option(None, "--never-negative", help="CSV of class pairs that are never negatives."),
    hardest: Optional[int] = typer.Option(None, help=f"Hardest triplets logged per epoch in mining/ (of all the batches' triplets, and as many of the miner's own). {_default(50)}"),
    resume: Optional[bool] = typer.Option(None, "--resume", help="Continue the run in --out from its last checkpoint (its own settings: only --epochs, --device, --workers, --cache-mb, --dist-timeout may differ from them)."),
    force: Optional[bool] = typer.Option(None, "--force", help="Write into an --out folder that holds other files, or a run (its files are replaced)."),
    sync_bn: Optional[bool] = typer.Option(None, "--sync-bn", help="Under torchrun: BatchNorm uses the statistics of the whole batch across processes (SyncBatchNorm, CUDA only); else each process normalises its own share."),
    dist_timeout: Optional[float] = typer.Option(None, "--dist-timeout", help=f"Under torchrun: seconds to wait for the other processes before the run stops with an error. {_default(300.0)}"),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
    unlabelled: Optional[bool] = typer.Option(None, "--unlabelled", help="Self-supervised: two augmented views of each image are its positive pair, the batch's other images its negatives; class folders, if any, only hold out validation classes."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="With --unlabelled: distinct images per batch (default P*K/2; each gives two views)."),
    pairs: Optional[Path] = typer.Option(None, "--pairs", help="CSV of image pairs known to match (paths relative to DATA_DIR): linked images are positives; unpaired is unknown, not negative."),
    pair_negatives: Optional[str] = typer.Option(None, "--pair-negatives", help=f"With --pairs: random (batches of random linked groups) | hard (batches of each other's nearest not-linked groups, re-found every epoch). {_default('random')}"),
    pair_groups: Optional[Path] = typer.Option(None, "--pair-groups", help="With --pairs: CSV image,group; images of one group are never each other's negatives."),
    target_far: Optional[float] = typer.Option(None, "--target-far", help=f"False accepts allowed when choosing the same / different threshold τ on the validation classes' pairs (the share of different-class pairs with d <= τ); stored with the best epoch. {_default(0.01)}"),
    freeze_backbone_epochs: Optional[float] = typer.Option(None, "--freeze-backbone-epochs", help=f"Head warm-up: epochs (fractions allowed) at the start during which the backbone is frozen and only the head learns. {_fine_tuning_default(0.0, 1.0)}"),
    backbone_lr_scale: Optional[float] = typer.Option(None, "--backbone-lr-scale", help=f"The backbone learns at this share of --lr (after the head warm-up). {_fine_tuning_default(1.0, 0.1)}"),
    backbone_stages: Optional[int] = typer.Option(None, "--backbone-stages", help=f"After the head warm-up only the backbone's last N stages learn (timm's coarse parameter groups; 0: all). {_fine_tuning_default(0, 2)}"),
    bn_mode: Optional[str] = typer.Option(None, "--bn-mode", help=f"BatchNorm while the backbone learns: train (batch statistics) | eval (keep the running statistics, learn γ, β) | frozen (keep both). {_fine_tuning_default('train', 'eval')}"),
    faces: Optional[bool] = typer.Option(None, "--faces", help=f"A face model: every image is reduced to its most confident face (MTCNN, aligned to the 112 x 112 template, at --image-size) before training, and so is every image the run later indexes, searches, evaluates or verifies; images without a face are skipped (labelled training only). {_default(False)}"),
    face_jitter: Optional[float] = typer.Option(None, "--face-jitter", help=f"With --faces: the similarity jitter of the aligned training crops at --augment 1, as a share of scale ± 10 %, shift ± 5 %, rotation ± 10° (0: a flip only; it grows with --augment). {_default('0.25 with --faces')}"),
    face_min_size: Optional[int] = typer.Option(None, "--face-min-size", help=f"With --faces: the smallest face (pixels) the detector looks for, in training and in every photo the run later indexes or searches (smaller finds the faces of group photos, and costs more time). {_default('40 with --faces')}"),
    face_max_side: Optional[int] = typer.Option(None, "--face-max-side", help=f"With --faces: a photo with a longer side is searched for faces as a copy shrunk to this many pixels (faster; its faces are found from --face-min-size x side / this); 0 searches every photo whole. {_default('1600 with --faces')}"),
    face_recheck: Optional[float] = typer.Option(None, "--face-recheck", help=f"With --faces: keep a face only if O-Net, shown it framed by its own eyes, nose and mouth, still scores it at least this (most false faces found in fruit and cartons fail; lower it if real faces are dropped); 0 keeps every face the detector finds. {_default('0.9 with --faces')}"),
    flip_average: Optional[bool] = typer.Option(None, "--flip-average/--no-flip-average", help=f"Embed every image with its mirror image and average the two (validation, index, search, evaluation, the app; the loss sees one embedding an image): about twice the cost of an embedding. {_default('on with --faces, else off')}"),
) -> None:
    """Train an embedding model on a labelled folder (or, with --unlabelled / --pairs, without negative labels); writes the run directory."""
    from retrieval.training import TrainConfig, train

    log_warnings()
    config = TrainConfig(
        data_dir=data_dir, out=out, backbone=backbone, pretrained=pretrained, weights=weights,
        embedding_dim=embedding_dim, image_size=image_size, loss=loss, miner=miner, margin=margin,
        temperature=temperature, epochs=epochs, classes_per_batch=classes_per_batch,
        images_per_class=images_per_class, lr=lr, val_fraction=val_fraction, seed=seed, device=device,
        precision=precision, num_workers=workers, cache_mb=cache_mb, augment=augment, class_groups=class_groups,
        groups_per_batch=groups_per_batch, negatives=negatives, never_negative=never_negative,
        hardest_per_epoch=hardest, resume=resume, force=force, sync_bn=sync_bn, dist_timeout=dist_timeout, command=" ".join(["retrieval"] + sys.argv[1:]),
        unlabelled=unlabelled, batch_size=batch_size, pairs=pairs, pair_negatives=pair_negatives, pair_groups=pair_groups,
        target_far=target_far, freeze_backbone_epochs=freeze_backbone_epochs, backbone_lr_scale=backbone_lr_scale, bn_mode=bn_mode,
        backbone_stages=backbone_stages, faces=faces, flip_average=flip_average, face_jitter=face_jitter,
        face_min_size=face_min_size, face_max_side=face_max_side, face_recheck=face_recheck,
    )

    from retrieval.distributed import is_main_process

    announce = _checked_defaults(config)
    result = train(config, progress=not quiet, on_epoch=_report_epoch, on_start=announce)
    if not is_main_process():  # under torchrun, rank 0 reports
        raise typer.Exit(130 if result.interrupted else 0)
    _report_run(result, out)


def _report_run(result, out: Path) -> None:
    """The lines after training: the untrained baseline and best epoch, then (unless interrupted:
    exit 130) the chosen threshold and the next command."""
    if result.interrupted and not result.resumable:  # the warning says there is nothing to resume
        raise typer.Exit(130)
    baseline = result.history[0] if result.history else {}
    written = f"Run written to {out}" if result.wrote else f"Nothing left to train: {out} is as it was"
    typer.echo(
        f"untrained: val R@1 {fmt(baseline.get('recall_at_1'))}, MAP@R {fmt(baseline.get('map_at_r'))}; "
        f"best epoch {result.best_epoch}. {written}"
    )
    if result.interrupted:
        raise typer.Exit(130)
    if threshold_line := _threshold_line(out):
        typer.echo(threshold_line)
    typer.echo(f"next: retrieval index {out} GALLERY_DIR   (then: retrieval app {out})")


def _checked_defaults(config):
    """Check the flags (one-line errors before anything else); returns what says which defaults the
    run took, for ``train`` to call once the run is set up (a data folder, ``--out`` or
    ``--weights`` refused then is one ``error:`` line, not that line and the error)."""
    from retrieval.training.config import describe_defaults

    resolved = config.resolve()
    resolved.validate()
    return lambda: typer.echo(describe_defaults(resolved))


def _report_epoch(row: dict) -> None:
    """One line per trained epoch."""
    typer.echo(
        f"epoch {row['epoch']}: loss {row['loss']:.4f}, active {fmt(row.get('active_fraction'))}, "
        f"violating {fmt(row.get('violating_fraction'))}, "
        f"val R@1 {fmt(row.get('recall_at_1'))}, MAP@R {fmt(row.get('map_at_r'))}, EER {fmt(row.get('eer'))}, "
        f"{row['images_per_second']:.0f} img/s, {row['seconds']:.0f} s"
    )


def _threshold_line(run_dir: Path) -> str:
    """What the run's config.json says about its threshold τ, in one line ("" without a config.json)."""
    from retrieval.run import CONFIG_NAME, read_config
    from retrieval.verification import describe_threshold

    if not (run_dir / CONFIG_NAME).is_file():
        return ""
    stored = read_config(run_dir).verification
    if stored is None:
        return (f"no threshold τ (no validation classes): set one with `retrieval calibrate {run_dir} DATA_DIR`, "
                "DATA_DIR a folder of class sub-folders the run did not train on")
    return describe_threshold(stored)
