"""What training met and what the model confuses: ``retrieval mining`` and ``retrieval confusions``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from retrieval.cli.common import app, log_warnings


@app.command("mining")
def mining_command(
    run_dir: Path = typer.Argument(..., help="A run directory written by `retrieval train`."),
    epoch: Optional[int] = typer.Option(None, help="Epoch to show (default: the last one logged)."),
    top: int = typer.Option(20, help="How many triplets, hardest first."),
    mined_only: bool = typer.Option(False, "--mined-only", help="Only the triplets the miner kept (those the loss trained on)."),
    class_name: Optional[str] = typer.Option(None, "--class", help="Only triplets whose anchor or negative is of this class."),
    json_output: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Show the hardest negatives of training: the epoch's hardest triplets of all its batches (smallest d_an − d_ap
    first, negative: the negative nearer than the positive), each marked whether the miner kept it."""
    import json
    import textwrap

    from rich.console import Console

    from retrieval.diagnostics import hardest_report
    from retrieval.safe_text import terminal_text
    from retrieval.tables import mining_table

    from retrieval.losses import LOSS_SETTING

    log_warnings()
    report = hardest_report(run_dir, epoch=epoch, top=top, mined_only=mined_only, class_name=class_name)
    if json_output:
        typer.echo(json.dumps(report))
        return
    has_margin = LOSS_SETTING.get(str(report["loss"]), "margin") == "margin"
    chosen = "".join([", mined only" if mined_only else "", f", class {class_name}" if class_name is not None else ""])
    objective = f"margin ε {report['margin']:g}" if has_margin else f"loss {report['loss']}: no margin (ε {report['margin']:g} a yardstick)"
    title = f"epoch {report['epoch']}: hardest triplets{chosen} · miner {report['miner']}, {objective}"
    console = Console()
    typer.echo(terminal_text(title))  # its own line: as a rich title it wrapped at the table's width
    console.print(mining_table(report["triplets"], title="", margin=report["margin"], width=console.width))
    if not report["n_logged"]:
        typer.echo(f"epoch {report['epoch']} logged no triplet (a run trained with --hardest 0 logs none)")
    elif not report["triplets"]:
        typer.echo(f"no logged triplet of epoch {report['epoch']} passes the filters")
    legend = ("d_an−d_ap < 0: the negative is nearer than the positive; < ε: "
              + ("it is inside the margin " if has_margin else "closer than the yardstick ε, which this loss did not train for ")
              + "(violation = ε − (d_an − d_ap) > 0). mined: whether the miner kept the triplet.")
    typer.echo(textwrap.fill(legend, width=console.width))  # the table's width: 80 columns into a file
    if not report["mined_recorded"]:
        typer.echo(textwrap.fill("mined: not recorded (a run trained before the log said; its log holds only the miner's "
                                 "triplets)", width=console.width))


@app.command("confusions")
def confusions_command(
    run_dir: Path = typer.Argument(..., help="A run directory written by `retrieval train`."),
    data_dir: Optional[Path] = typer.Argument(None, help="A labelled folder to embed (default: the run's indexed gallery, from its stored embeddings)."),
    top: int = typer.Option(20, "--top", min=1, help="How many class pairs, most confused first."),
    per_class: int = typer.Option(3, "--per-class", min=1, help="Items nearest to another class, per class."),
    device: str = typer.Option("auto", help="auto | cpu | cuda (embedding DATA_DIR)."),
    batch_size: int = typer.Option(64, help="Images per embedding batch."),
    json_output: bool = typer.Option(False, "--json", help='Print one JSON object: {"source", "n_items", "n_classes", "pairs": [...], "classes": [...]}.'),
) -> None:
    """The trained model's confusions (exact search): for each class its items nearest to another class, and the
    most confused class pairs."""
    import json

    from rich.console import Console

    from retrieval.confusions import run_confusions
    from retrieval.tables import confused_pairs_table, nearest_other_table

    log_warnings()
    result = run_confusions(run_dir, data_dir, per_class=per_class, top_pairs=top, device=device, batch_size=batch_size)
    if json_output:
        typer.echo(json.dumps(result))
        return
    source = "the indexed gallery" if data_dir is None else str(data_dir)
    console = Console()
    console.print(confused_pairs_table(result["pairs"], title=f"most confused class pairs of {source} "
                                       f"({result['n_items']} items, {result['n_classes']} classes)", width=console.width))
    console.print(nearest_other_table(result["classes"], title="each class's items nearest to another class", width=console.width))
    typer.echo("rank-1: items whose nearest neighbour is of the other class (of those with a same-class item;\n"
               "- where none has one); nearest neg.: items whose nearest other-class item is there; d_an: to it,\n"
               "d_ap: to the item's nearest same-class item.")
