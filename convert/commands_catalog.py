"""The commands that read a catalog: ls, query, info, export, plot.

NumPy and xarray load inside the commands, so that `msconvert --help` stays fast.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console
from rich.table import Table

from msconvert.convert.cli_common import (
    CONTEXT,
    open_catalog,
    open_clip,
    split_values,
    stdout,
)
from msconvert.convert.options import (
    COLUMNS,
    END,
    FIELD,
    FIELDS,
    JOINTS,
    MODEL,
    MUSCLES,
    SEL,
    SOLUTION,
    SOLUTIONS,
    SOURCE_FORMAT,
    START,
    STATUS,
    check_out,
    out,
    output_format,
    use,
)

if TYPE_CHECKING:
    import xarray as xr


@click.command(name="ls", context_settings=CONTEXT)
@click.argument("catalog")
@use(STATUS, SOURCE_FORMAT, output_format(("table", "csv", "json"), "table"), COLUMNS)
def ls_command(
    catalog: str, status: str | None, source_format: str | None, fmt: str, columns: str
) -> None:
    """List the clips of a catalog with their status, reason and metrics.

    \b
    Examples:
      msconvert ls catalog.zarr --status failed
      msconvert ls catalog.zarr --source-format bvh      # clips read from BVH files
      msconvert ls catalog.zarr --format csv > clips.csv
      msconvert ls catalog.zarr --columns all
    """
    cat = open_catalog(catalog)
    entries = cat.clips(status=status)
    if source_format:
        entries = [e for e in entries if _format_matches(_source_format(cat, e), source_format)]
    rows = [
        {
            "clip": e.clip,
            "status": e.status,
            "reason": e.reason,
            "stage": e.stage,
            "metrics": dict(e.metrics),
            **{k: v for k, v in e.summary.items() if k not in ("clip",)},
        }
        for e in entries
    ]
    if fmt == "json":
        click.echo(json.dumps(rows, indent=1, allow_nan=False))
        return
    metric_keys = sorted({k for r in rows for k in r["metrics"]})
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["clip", "status", "reason", *metric_keys])
        for r in rows:
            writer.writerow(
                [
                    r["clip"],
                    r["status"],
                    r["reason"],
                    *(_fmt_metric(r["metrics"].get(k), exact=True) for k in metric_keys),
                ]
            )
        click.echo(buf.getvalue(), nl=False)
        return
    if columns.strip() != "all":
        wanted = [c.strip() for c in columns.split(",") if c.strip()]
        metric_keys = [k for k in wanted if k in metric_keys]
    table = Table(title=f"{catalog}: {len(rows)} clips")
    table.add_column("clip", overflow="fold", min_width=12)
    table.add_column("status", no_wrap=True, min_width=8)
    for k in metric_keys:
        # Headers break at dots so that many columns still fit a terminal.
        table.add_column(k.replace(".", ".\n"), justify="right", max_width=12, overflow="fold")
    reasons = any(r["reason"] for r in rows)  # no empty column when nothing failed
    if reasons:
        table.add_column("reason", overflow="fold")
    for r in rows:
        style = "green" if r["status"] == "complete" else "red"
        table.add_row(
            r["clip"],
            f"[{style}]{r['status']}",
            *(_fmt_metric(r["metrics"].get(k)) for k in metric_keys),
            *([r["reason"]] if reasons else []),
        )
    stdout.print(table)


def _source_format(cat: Any, entry: Any) -> str:
    """A clip's source format ('smplh', 'smplx', 'bvh:cmu'): from the index, or for clips
    written before it was recorded there, from the clip's attributes ('' when unknown)."""
    found = entry.summary.get("source_format")
    if found:
        return str(found)
    try:
        attrs = cat.attrs(entry.clip)
    except Exception:  # a failed or half-written clip may have no readable group
        return ""
    return str(attrs.get("source_format") or attrs.get("body_model") or "")


def _format_matches(found: str, wanted: str) -> bool:
    """'bvh' matches every 'bvh:<map>'; 'bvh:cmu' only itself."""
    return found == wanted or (":" not in wanted and found.partition(":")[0] == wanted)


def _fmt_metric(v: Any, exact: bool = False) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return repr(v) if exact else f"{v:.4g}"
    return str(v)


@click.command(context_settings=CONTEXT)
@click.argument("catalog")
@click.argument("clip")
@use(FIELD, JOINTS, MUSCLES, SEL, SOLUTION, START, END)
@use(output_format(("table", "csv", "npy", "json"), "table"))
@out(required=False)
def query(
    catalog: str,
    clip: str,
    field_name: str,
    joints: tuple[str, ...],
    muscles: tuple[str, ...],
    selections: tuple[str, ...],
    solution: int | None,
    start: float | None,
    end: float | None,
    fmt: str,
    out: str | None,
) -> None:
    """Read one array of one clip, selected by label, as a table, CSV, .npy or JSON.

    Written to standard output, or to the file --out.

    \b
    Examples:
      msconvert query catalog.zarr KIT/3/walk --field source_joints --joints left_knee
      msconvert query catalog.zarr KIT/3/walk --field activation --muscles soleus_r --format csv
      msconvert query catalog.zarr KIT/3/walk --field grf --sel foot=left --sel xyz=z
      msconvert query catalog.zarr KIT/3/walk --field activation --solution 1  # --solutions K
    """
    out_file = check_out(out, dir_okay=False)
    cat = open_catalog(catalog)
    sel: dict[str, list[str]] = {}
    if joints:
        sel["joint"] = split_values(joints)
    if muscles:
        sel["muscle"] = split_values(muscles)
    for item in selections:
        dim, eq, labels = item.partition("=")
        if not eq or not dim.strip() or not split_values((labels,)):
            raise click.BadParameter(f"expected DIM=LABELS, got {item!r}", param_hint="--sel")
        sel.setdefault(dim.strip(), []).extend(split_values((labels,)))
    time_range = (start, end) if start is not None or end is not None else None
    isel = _solution_isel(cat, clip, field_name, solution)
    try:
        arr = cat.read_variable(clip, field_name, isel=isel, sel=sel or None, time_range=time_range)
    except KeyError as exc:
        raise click.ClickException(str(exc.args[0]) if exc.args else str(exc)) from None
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    _emit(arr, clip, fmt, Path(out_file) if out_file is not None else None)


def _solution_isel(cat: Any, clip: str, field: str, solution: int | None) -> dict[str, int]:
    """The one muscle solution to read of a field on the solution dim (None: 0, the usual
    answer), as an isel; a solution the clip does not hold is a one-line error."""
    from msconvert.dims import DIM_SOLUTION, SolutionError, check_solution

    try:
        attrs = cat.attrs(clip)
    except KeyError:
        return {}  # reading the field says what is wrong with the clip
    count = int(attrs.get("solutions") or 1)  # written by --solutions K > 1
    try:
        check_solution(clip, count, 0 if solution is None else solution)
    except SolutionError as exc:
        raise click.ClickException(str(exc)) from None
    if count == 1:
        return {}
    dims = cat.info(clip)["arrays"].get(field, {}).get("dims", [])
    return {DIM_SOLUTION: solution or 0} if DIM_SOLUTION in dims else {}


def _emit(arr: xr.DataArray, clip: str, fmt: str, out: Path | None) -> None:
    import numpy as np

    if fmt == "npy":
        buf = io.BytesIO()
        np.save(buf, arr.values, allow_pickle=False)
        _write_bytes(buf.getvalue(), out)
        return
    if fmt == "json":
        doc = {
            "clip": clip,
            "field": arr.name,
            "dims": list(arr.dims),
            "coords": {d: _labels(arr, d) for d in arr.dims},
            "attrs": {k: v for k, v in arr.attrs.items() if isinstance(v, str | int | float)},
            "data": np.where(np.isfinite(arr.values), arr.values, np.nan).tolist()
            if arr.dtype.kind == "f"
            else arr.values.tolist(),
        }
        _write_bytes(json.dumps(doc, allow_nan=True).encode(), out)
        return
    header, rows = _wide(arr)
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
        _write_bytes(buf.getvalue().encode(), out)
        return
    table = Table(title=f"{clip}: {arr.name} {dict(arr.sizes)} [{arr.attrs.get('units', '')}]")
    for h in header:
        table.add_column(h, justify="right")
    for r in rows:
        table.add_row(*r)
    if out is not None:
        console = Console(file=io.StringIO(), width=200)
        console.print(table)
        _write_bytes(console.file.getvalue().encode(), out)
    else:
        stdout.print(table)


def _labels(arr: xr.DataArray, dim: str) -> list[Any]:
    if dim in arr.coords:
        return arr.coords[dim].values.tolist()
    return list(range(arr.sizes[dim]))


def _wide(arr: xr.DataArray) -> tuple[list[str], list[list[str]]]:
    """Rows along the first dim, one column per combination of the other dims' labels."""
    import numpy as np

    if arr.ndim == 0:
        return [str(arr.name)], [[_cell(arr.values.item())]]
    first, rest = arr.dims[0], arr.dims[1:]
    grids = [_labels(arr, d) for d in rest]
    names = [
        ".".join(str(grids[i][k]) for i, k in enumerate(combo))
        for combo in np.ndindex(*arr.shape[1:])
    ]
    header = [str(first), *(names if rest else [str(arr.name)])]
    values = arr.values.reshape(arr.shape[0], -1)
    first_labels = _labels(arr, first)
    rows = [[_cell(first_labels[i]), *(_cell(v) for v in values[i])] for i in range(arr.shape[0])]
    return header, rows


def _cell(v: Any) -> str:
    import numpy as np

    if isinstance(v, float | np.floating):
        return f"{float(v):.9g}"
    return str(v)


def _write_bytes(data: bytes, out: Path | None) -> None:
    if out is None:
        sys.stdout.buffer.write(data)
        if not data.endswith(b"\n") and not data.startswith(b"\x93NUMPY"):
            sys.stdout.buffer.write(b"\n")
        sys.stdout.flush()
    else:
        out.write_bytes(data)


@click.command(context_settings=CONTEXT)
@click.argument("catalog")
@click.argument("clip")
@output_format(("table", "json"), "table")
def info(catalog: str, clip: str, fmt: str) -> None:
    """Show a clip's attributes (provenance, settings, metrics) and its arrays' shapes.

    \b
    Example:
      msconvert info catalog.zarr KIT/3/walk --format json
    """
    cat = open_catalog(catalog)
    try:
        doc = cat.info(clip)
    except KeyError as exc:
        raise click.ClickException(str(exc.args[0]) if exc.args else str(exc)) from None
    if fmt == "json":
        click.echo(json.dumps(doc, indent=1, default=str))
        return
    attrs = Table(title=f"{clip}: attributes", show_header=False)
    attrs.add_column("key")
    attrs.add_column("value", overflow="fold")
    for k, v in sorted(doc.get("attrs", {}).items()):
        attrs.add_row(k, json.dumps(v) if isinstance(v, dict | list) else str(v))
    stdout.print(attrs)
    arrays = Table(title=f"{clip}: arrays")
    for col in ("name", "dims", "shape", "dtype", "chunks"):
        arrays.add_column(col)
    for name, a in sorted(doc.get("arrays", {}).items()):
        arrays.add_row(
            name,
            ", ".join(a["dims"]),
            str(tuple(a["shape"])),
            str(a["dtype"]),
            str(tuple(a["chunks"])),
        )
    stdout.print(arrays)


@click.command(context_settings=CONTEXT)
@click.argument("catalog")
@click.argument("clip")
@use(output_format(("csv", "sto", "mot", "npz")), FIELDS, SOLUTION, out(), MODEL)
def export(
    catalog: str,
    clip: str,
    fmt: str,
    fields: str | None,
    solution: int | None,
    out: str,
    model_path: str | None,
) -> None:
    """Write one clip in a format other tools read (OpenSim .sto/.mot, CSV, NumPy .npz).

    --out is a file prefix or a directory. For --format mot pass --model when the clip was made
    with another model than the default one.

    \b
    Examples:
      msconvert export catalog.zarr KIT/3/walk --format sto --out walk  # walk_activation.sto ...
      msconvert export catalog.zarr KIT/3/walk --format mot --out walk.mot  # joint angles, degrees
      msconvert export catalog.zarr KIT/3/walk --format csv --fields grf,activation --out walk
      msconvert export catalog.zarr KIT/3/walk --format sto --solution 2 --out walk_s2
    """
    from msconvert.convert.exports import export_clip

    ds = open_clip(catalog, clip)
    model = None
    if model_path:
        from msconvert.emulator.model import load_model

        model = load_model(model_path)
    try:
        paths = export_clip(ds, clip, fmt, out, fields, model=model, solution=solution)
    except KeyError as exc:
        raise click.ClickException(str(exc.args[0]) if exc.args else str(exc)) from None
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    for path in paths:
        click.echo(str(path))


@click.command(context_settings=CONTEXT)
@click.argument("catalog")
@click.argument("clip")
@use(MUSCLES, SOLUTION, SOLUTIONS, out())
def plot(
    catalog: str,
    clip: str,
    muscles: tuple[str, ...],
    solution: int | None,
    solutions: int,
    out: str,
) -> None:
    """One figure of a clip: activation heatmap, chosen muscles, tracking error, vertical GRF.

    --out is the figure file: .png, .pdf or .svg. Of a clip converted with --solutions K, the
    panels show one solution (--solution), and --solutions K overlays the first K solutions'
    activations of the chosen muscles.

    \b
    Examples:
      msconvert plot catalog.zarr KIT/3/walk --muscles soleus_r,tibant_r --out walk.png
      msconvert plot catalog.zarr KIT/3/walk --solutions 3 --muscles soleus_r --out walk.png
    """
    out = check_out(out, dir_okay=False)
    from msconvert.catalog.plot import plot_clip

    ds = open_clip(catalog, clip)
    try:
        path = plot_clip(
            ds,
            clip,
            out,
            muscles=split_values(muscles) or None,
            solution=solution,
            solutions=solutions,
        )
    except KeyError as exc:
        raise click.ClickException(str(exc.args[0]) if exc.args else str(exc)) from None
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(str(path))


COMMANDS = (ls_command, query, info, export, plot)
