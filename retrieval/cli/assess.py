"""Commands that measure a run: ``retrieval evaluate``, ``retrieval calibrate`` (the threshold τ) and ``retrieval verify`` (two images, one verdict)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from retrieval.cli.common import LOOK_HARDER_HELP, app, fmt, log_warnings, table_console
from retrieval.progress import stage_bars
from retrieval.safe_text import printable, terminal_text


#: what the progress bars of evaluate and calibrate say (retrieval.evaluate's on_progress stages)
EVALUATE_STAGES = {"detect": "finding faces", "embed": "embedding images"}


@app.command("evaluate")
def evaluate_command(
    run_dir: Path = typer.Argument(..., help="A run directory written by `retrieval train`."),
    data_dir: Optional[Path] = typer.Argument(None, help="Labelled folder, evaluated leave-one-out."),
    query: Optional[Path] = typer.Option(None, "--query", help="Labelled query folder (with --gallery)."),
    gallery: Optional[Path] = typer.Option(None, "--gallery", help="Labelled gallery folder (with --query)."),
    device: str = typer.Option("auto", help="auto | cpu | cuda."),
    batch_size: int = typer.Option(64, help="Images per embedding batch."),
    json_output: bool = typer.Option(False, "--json", help="Print one JSON object."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
) -> None:
    """Recall@1/5/10, Precision@10 and MAP@R (exact search): leave-one-out on DATA_DIR, or --query against --gallery."""
    import json

    from retrieval.evaluate import evaluate_run

    log_warnings()
    with stage_bars(EVALUATE_STAGES, enabled=not quiet) as on_progress:
        metrics = evaluate_run(run_dir, data_dir, query_dir=query, gallery_dir=gallery, device=device, batch_size=batch_size,
                               on_progress=on_progress)
    if json_output:
        typer.echo(json.dumps(metrics))
        return
    from rich.table import Table

    # the heading is a line of its own: as a rich title it would wrap at the narrow table's width
    typer.echo(terminal_text(f"{run_dir}: " + (f"{query} → {gallery}" if query else f"{data_dir} (leave-one-out)")))
    table = Table()
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in metrics.items():
        if isinstance(value, dict):  # tar_at_far: one row a FAR
            for far, tar in value.items():
                table.add_row(f"tar_at_far {far}", fmt(tar))
        else:
            table.add_row(key, f"{value:.4f}" if isinstance(value, float) else ("-" if value is None else str(value)))
    table_console().print(table)


@app.command("calibrate")
def calibrate_command(
    run_dir: Path = typer.Argument(..., help="A run directory written by `retrieval train`."),
    data_dir: Path = typer.Argument(..., help="Labelled folder of classes the model did not train on."),
    target_far: float = typer.Option(0.01, "--target-far", help="False accepts allowed: the share of different-class pairs with d <= threshold."),
    device: str = typer.Option("auto", help="auto | cpu | cuda."),
    json_output: bool = typer.Option(False, "--json", help="Print one JSON object."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
) -> None:
    """Choose the run's same / different threshold on every pair of DATA_DIR at --target-far and store it in config.json."""
    import json

    from retrieval.evaluate import calibrate_run

    log_warnings()
    with stage_bars(EVALUATE_STAGES, enabled=not quiet) as on_progress:
        stored = calibrate_run(run_dir, data_dir, target_far=target_far, device=device, on_progress=on_progress)
    if json_output:
        typer.echo(json.dumps(stored))
        return
    from retrieval.verification import describe_threshold

    typer.echo(f"{describe_threshold(stored)}; written to {Path(run_dir) / 'config.json'}")


@app.command("verify")
def verify_command(
    run_dir: Path = typer.Argument(..., help="A run directory written by `retrieval train`."),
    image_a: Path = typer.Argument(..., help="The first image."),
    image_b: Path = typer.Argument(..., help="The second image."),
    device: str = typer.Option("cpu", help="cpu | cuda | auto."),
    json_output: bool = typer.Option(False, "--json", help='Print one JSON object: {"distance", "threshold", "same", "far", "target_far"}; a face run adds "faces": [{"box", "score", "face", "n_faces"}] for each image.'),
    look_harder: bool = typer.Option(False, "--look-harder", help=LOOK_HARDER_HELP),
    face_a: Optional[int] = typer.Option(None, "--face-a", min=1, help="Face run: which face of IMAGE_A to compare, numbered from 1, most confident first, as `retrieval search` numbers them (default 1)."),
    face_b: Optional[int] = typer.Option(None, "--face-b", min=1, help="Face run: which face of IMAGE_B to compare (as --face-a)."),
) -> None:
    """Same identity / product or not: the distance of two images against the run's threshold."""
    import json

    from retrieval.evaluate import verify_images
    from retrieval.verification import distance_and_threshold

    log_warnings()
    picked = tuple(None if face is None else face - 1 for face in (face_a, face_b))
    result = verify_images(run_dir, image_a, image_b, device=device, look_harder=look_harder, faces=picked)
    if json_output:
        typer.echo(json.dumps(result))
        return
    for path, face, flag in zip((image_a, image_b), result.get("faces", []), ("--face-a", "--face-b")):  # which face of a group photo
        if face["n_faces"] > 1:
            box = ", ".join(f"{v:.0f}" for v in face["box"])
            which = "the most confident" if face["face"] == 0 else f"face {face['face'] + 1}"
            typer.echo(printable(f"{path}: {face['n_faces']} faces found; compared {which} (box {box}, score "
                                 f"{face['score']:.3f}; {flag} N picks another, as `retrieval search` numbers them)"))
    if result["threshold"] is None:
        typer.echo(f"d = {result['distance']:.4f}; no threshold is set for this run, so no verdict "
                   f"(set one with `retrieval calibrate {run_dir} DATA_DIR`)")
        return
    verdict = "same" if result["same"] else "different"
    sign = "<=" if result["same"] else ">"
    d, tau = distance_and_threshold(result["distance"], result["threshold"], decimals=4)
    typer.echo(f"{verdict}: d = {d} {sign} threshold {tau} "
               f"(chosen at FAR {result['target_far']:g}; {result['far']:.4f} on its pairs)")
