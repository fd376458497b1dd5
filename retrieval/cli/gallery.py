"""The gallery commands: ``retrieval index`` (build, add, remove) and ``retrieval search``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from retrieval.cli.common import GALLERY_ROOT_HELP, LOOK_HARDER_HELP, app, log_warnings, table_console
from retrieval.errors import RetrievalError
from retrieval.progress import stage_bars
from retrieval.safe_text import printable, terminal_text




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
    gallery_root: Optional[list[Path]] = typer.Option(None, "--gallery-root", help=GALLERY_ROOT_HELP + " With --add or --remove / --remove-label; the new index records them."),
    remove_label: Optional[list[str]] = typer.Option(None, "--remove-label", help="Remove every item of this label from the index (repeatable): rebuilt from the stored embeddings; a face run's cached faces of them are deleted."),
    remove: Optional[list[Path]] = typer.Option(None, "--remove", help="Remove the items of this gallery photo (repeatable; it may be gone from disk already), as --remove-label does."),
) -> None:
    """Embed a gallery and build its Annoy index in RUN_DIR/index/ (or --add DIR to an existing one; --remove-label / --remove to take items out)."""
    import json
    import time

    from retrieval.distributed import is_main_process  # imports torch: not at the CLI's start-up
    from retrieval.index import DEFAULT_N_TREES, add_to_index, build_index

    log_warnings()
    if remove_label or remove:
        _remove_from_index(run_dir, remove_label or [], remove or [], json_output=json_output, others=(gallery_dir, add),
                           gallery_roots=gallery_root)
        return
    if n_trees is not None and n_trees < 1:
        raise RetrievalError(f"--n-trees must be at least 1, got {n_trees}")
    if gallery_dir is not None and add is not None:
        raise RetrievalError("give GALLERY_DIR to build a new index, or --add DIR to add to the existing one, not both")
    if gallery_dir is None and add is None:
        raise RetrievalError("give GALLERY_DIR to build a new index, or --add DIR to add to the existing one "
                             "(or --remove-label NAME / --remove PATH to take items out)")
    if gallery_root and add is None:
        raise RetrievalError("--gallery-root re-roots an existing index: give it with --add or --remove (a new index's root is GALLERY_DIR)")
    stages = {"detect": "finding faces", "embed": "embedding images", "copy": "copying stored embeddings",
              "add": "loading vectors into Annoy", "build": "building Annoy trees"}
    before = _index_before(run_dir) if add is not None else None  # --add reports this call's skips, and whether it added
    started = time.perf_counter()
    with stage_bars(stages, enabled=not quiet and is_main_process()) as on_progress:  # torchrun: rank 0's bars
        options = dict(batch_size=batch_size, device=device, num_workers=workers, on_progress=on_progress)
        if add is not None:
            metadata = add_to_index(run_dir, add, n_trees=n_trees, gallery_roots=gallery_root, **options)
        else:
            metadata = build_index(run_dir, gallery_dir, n_trees=n_trees or DEFAULT_N_TREES, **options)
    if not is_main_process():  # under torchrun the other processes only embed their shares; rank 0 reports
        return
    skipped_before = len(before.get("skipped", [])) if before else 0
    summary = _index_summary(run_dir, metadata, seconds=time.perf_counter() - started, skipped_before=skipped_before)
    if "skipped_now" in metadata:  # --add with nothing new: gallery.json is as before, the call's own count
        summary["n_skipped"] = int(metadata["skipped_now"])
    summary["added"] = None if add is None else bool(metadata.get("added"))
    if add is not None:  # images of the added folder the index holds already (the same files), not added again
        summary["n_already_indexed"] = int(metadata.get("already_indexed", 0))
        summary["roots_recorded"] = bool(metadata.get("roots_recorded"))
    if "faces_forgotten" in metadata:  # a face index rebuilt on another gallery: the replaced photos' cached faces
        summary["faces_forgotten"] = metadata["faces_forgotten"]
    if json_output:
        typer.echo(json.dumps(summary))
        return
    _print_index_summary(summary, run_dir, add)


def _print_index_summary(summary: dict, run_dir: Path, add: Path | None) -> None:
    """The table-output lines of `retrieval index`: what the index holds and what was left out, or
    "nothing added" for an ``--add`` that found nothing new."""
    left_out = [f"{summary['n_skipped']} unreadable image(s) skipped"] if summary["n_skipped"] else []
    already = f"{summary['n_already_indexed']} image(s) of {add} already indexed" if summary.get("n_already_indexed") else ""
    if already:
        left_out.append(f"{already}, not added again")
    if summary.get("n_without_face"):
        left_out.append(f"{summary['n_without_face']} photo(s) without a face not in it")
    if summary.get("faces_forgotten"):
        left_out.append(f"{summary['faces_forgotten']} cached face file(s) of the replaced index's photos deleted")
    skipped = f" ({'; '.join(left_out)})" if left_out else ""
    what = (f"{summary['n_items']} face(s) from {summary['n_photos']} photo(s)" if "n_photos" in summary
            else f"{summary['n_items']} image(s)")
    if summary["added"] is False:  # the warning above says why, or the count of images already indexed
        recorded = "; recorded the gallery folders given with --gallery-root" if summary["roots_recorded"] else ""
        typer.echo(printable(f"nothing added: {summary['index']} holds {what}, as before"
                             f"{f' ({already})' if already else ''}{recorded}"))
        return
    typer.echo(f"indexed {what}{skipped} in {summary['index']} with {summary['n_trees']} trees, {summary['seconds']:.1f} s")
    typer.echo(f"next: retrieval search {run_dir} IMAGE   (or: retrieval app {run_dir})")


def _index_before(run_dir: Path) -> dict | None:
    """The index's ``gallery.json`` before this call (None without a readable one: ``--add`` then says why)."""
    from retrieval.index import read_index_metadata

    try:
        return read_index_metadata(run_dir)
    except (RetrievalError, OSError):
        return None


def _index_summary(run_dir: Path, metadata: dict, *, seconds: float, skipped_before: int = 0) -> dict:
    """What ``retrieval index`` reports: the index folder, its items (a face run's: faces, with
    ``n_photos``, the photos they come from, and ``n_without_face``, the gallery's photos searched
    without a face found), the unreadable images this call skipped (``--add``: not the earlier
    builds'), trees, labels, seconds."""
    skipped = max(0, len(metadata.get("skipped", [])) - skipped_before)
    summary = {"index": str(Path(run_dir) / "index"), "n_items": metadata["n_items"], "n_skipped": skipped,
               "n_trees": metadata["n_trees"], "labelled": metadata["labelled"], "seconds": round(seconds, 2)}
    items = metadata["items"]
    if "face" in items:  # a face run: each item is a face, several may share a photo
        summary["n_photos"] = len(set(zip(items["root"], items["path"])))
        summary["n_without_face"] = len(metadata.get("without_face", []))
    return summary


def _remove_from_index(run_dir: Path, labels: list[str], paths: list[Path], *, json_output: bool, others,
                       gallery_roots: list[Path] | None = None) -> None:
    """``retrieval index RUN --remove-label NAME / --remove PATH``."""
    import json

    from retrieval.index.remove import remove_from_index

    if any(other is not None for other in others):
        raise RetrievalError("--remove-label / --remove take items out of the existing index: give them without GALLERY_DIR or --add")
    result = remove_from_index(run_dir, labels=labels, paths=paths, gallery_roots=gallery_roots)
    if json_output:
        typer.echo(json.dumps(result))
        return
    faceless = (f"; {result['without_face_forgotten']} photo(s) without a face no longer listed"
                if result["without_face_forgotten"] else "")
    typer.echo(f"removed {result['removed']} item(s) from {Path(run_dir) / 'index'} ({result['n_items']} left; "
               f"{result['faces_forgotten']} cached face file(s) deleted{faceless})")


@app.command("search")
def search_command(
    run_dir: Path = typer.Argument(..., help="A run directory with an index (`retrieval index`)."),
    image: Path = typer.Argument(..., help="The query image."),
    k: int = typer.Option(10, "-k", "--k", min=1, help="Number of neighbours."),
    exact: bool = typer.Option(False, "--exact", help="Brute force over the stored embeddings (the reference) instead of Annoy."),
    search_k: Optional[int] = typer.Option(None, "--search-k", help="Annoy nodes to inspect (default: tuned for recall@10 >= 0.99)."),
    device: str = typer.Option("cpu", help="cpu | cuda | auto, for embedding the query."),
    json_output: bool = typer.Option(False, "--json", help='Print one JSON object: {"neighbours": [{"path", "label", "distance", "similarity", "match"}, ...], "verdict": {"match", "label", "distance", "threshold", "path", "face"}}, paths absolute (the table shows them relative to the gallery folder); for a face run {"faces": [{"box", "score", "neighbours", "verdict"}, ...]}, one entry a face found.'),
    gallery_root: Optional[list[Path]] = typer.Option(None, "--gallery-root", help=GALLERY_ROOT_HELP),
    look_harder: bool = typer.Option(False, "--look-harder", help=LOOK_HARDER_HELP),
) -> None:
    """Search the run's gallery index for the neighbours of IMAGE (distance = training's Euclidean distance)."""
    import json

    from retrieval.data import MAX_QUERY_PIXELS, load_image
    from retrieval.index import GalleryIndex

    log_warnings()
    if look_harder:  # the flag's own error first: it stands whether or not an index is built yet
        from retrieval.faces.detect import LOOK_HARDER_WITHOUT_FACES
        from retrieval.run import read_config

        if read_config(run_dir).faces is None:
            raise RetrievalError(LOOK_HARDER_WITHOUT_FACES)
    query = load_image(image, max_pixels=MAX_QUERY_PIXELS)
    gallery = GalleryIndex.load(run_dir, device=device, gallery_roots=gallery_root)
    if gallery.has_faces:  # a face run: every face of the query is searched
        _search_faces(gallery, run_dir, image, query, k, json_output=json_output, look_harder=look_harder, exact=exact,
                      search_k=search_k)
        return
    neighbours = gallery.search(query, k, exact=exact, search_k=search_k)
    verdict = gallery.verdict(neighbours)
    if json_output:
        typer.echo(json.dumps({"neighbours": [n.to_json() for n in neighbours], "verdict": verdict.to_json()}))
        return
    from rich.table import Table

    method = "exact" if exact else f"Annoy, {gallery.n_trees} trees"
    root = gallery.shown_root
    typer.echo(printable(f"{len(neighbours)} nearest to {image} ({method})"))  # a line of its own: never wrapped
    table = Table(caption=terminal_text(f"paths relative to {root}") if root is not None else None)
    columns = [("#", "right"), ("path", "left"), ("label", "left"), ("distance", "right"), ("similarity", "right")]
    if gallery.threshold is not None:
        columns.append(("match", "left"))
    for column, justify in columns:
        table.add_column(column, justify=justify, overflow="fold")
    for rank, n in enumerate(neighbours, 1):
        cells = [str(rank), terminal_text(gallery.shown_path(n.item)), terminal_text("-" if n.label is None else n.label), f"{n.distance:.4f}", f"{n.similarity:.4f}"]
        table.add_row(*cells, *(["yes" if n.match else "no"] if gallery.threshold is not None else []))
    table_console().print(table)
    target = gallery.threshold.target_far if gallery.threshold is not None else None
    nearest = gallery.shown_path(neighbours[0].item) if neighbours else None
    typer.echo(printable(verdict.describe(target, nearest=nearest, run_dir=str(run_dir))))


def _search_faces(gallery, run_dir: Path, image: Path, query, k: int, *, json_output: bool, look_harder: bool,
                  **options) -> None:
    """``retrieval search`` on a face run: {"faces": [...]} (DESIGN.md), or one table a face; with
    ``look_harder`` the run's pipeline looking harder for the query's faces (FacePipeline.harder)."""
    import json

    from retrieval.faces.face_search import face_tables, search_faces
    from retrieval.faces.run_faces import run_pipeline
    from retrieval.run import read_config

    pipeline = run_pipeline(run_dir, read_config(run_dir))
    if look_harder:
        pipeline = pipeline.harder()
    results = search_faces(gallery, pipeline, query, k, **options)
    if json_output:
        typer.echo(json.dumps({"faces": [r.to_json(gallery) for r in results]}))
        return
    if not results:
        hint = pipeline.settings.no_face_hint(query.size, looked_harder=look_harder)
        harder = "" if look_harder else f"; {pipeline.settings.look_harder_hint(query.size)}"
        typer.echo(printable(f"no face found in {image}: nothing to search; {hint}{harder}"))
        return

    for heading, table, verdict in face_tables(results, gallery, image):  # the heading a line of its own: never wrapped
        typer.echo(printable(heading))
        table_console().print(table)
        typer.echo(printable(verdict))
