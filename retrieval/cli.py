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


def _not_built_yet(what: str, issue: int) -> None:
    raise RetrievalError(f"`retrieval {what}` is not built yet (issue #{issue})")


@app.command("sample-data")
def sample_data_command(
    out_dir: Path = typer.Argument(..., help="Where to write train/, test/ and catalog/."),
    seed: int = typer.Option(0, help="Seed: the same seed gives the same images."),
) -> None:
    """Generate the project's own small labelled product data set (train / test / catalog)."""
    _not_built_yet("sample-data", 2)


@app.command("train")
def train_command(
    data_dir: Path = typer.Argument(..., help="Labelled folder: DATA_DIR/<class>/<image>."),
    out: Path = typer.Option(..., "--out", help="Run directory to write."),
) -> None:
    """Train an embedding model on a labelled folder."""
    _not_built_yet("train", 4)


@app.command("evaluate")
def evaluate_command(
    run_dir: Path = typer.Argument(..., help="A run directory written by `retrieval train`."),
    data_dir: Optional[Path] = typer.Argument(None, help="Labelled folder, evaluated leave-one-out."),
    json_output: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Recall@K, Precision@10 and MAP@R of a run on a labelled folder."""
    _not_built_yet("evaluate", 4)


@app.command("index")
def index_command(
    run_dir: Path = typer.Argument(..., help="A run directory written by `retrieval train`."),
    gallery_dir: Path = typer.Argument(..., help="Folder of gallery images (labelled or flat)."),
) -> None:
    """Embed a gallery and build its Annoy index in RUN_DIR/index/."""
    _not_built_yet("index", 5)


@app.command("search")
def search_command(
    run_dir: Path = typer.Argument(..., help="A run directory with an index."),
    image: Path = typer.Argument(..., help="The query image."),
    json_output: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Search the run's gallery index for the neighbours of IMAGE."""
    _not_built_yet("search", 5)


@app.command("mining")
def mining_command(
    run_dir: Path = typer.Argument(..., help="A run directory written by `retrieval train`."),
    json_output: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Show the hardest negatives that training mined."""
    _not_built_yet("mining", 4)


@app.command("app")
def app_command(
    run_dir: Optional[Path] = typer.Argument(None, help="A run directory (else pick one in the app)."),
) -> None:
    """Start the Streamlit front end on a run directory."""
    _not_built_yet("app", 6)


def main() -> None:
    """Console-script entry point: run the typer app, turning user errors into one line."""
    try:
        app()
    except RetrievalError as error:
        typer.secho(f"error: {error}", fg=typer.colors.RED, err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
