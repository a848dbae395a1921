"""What the `msconvert` commands share: the consoles, the context settings, and opening or
creating a catalog and compiling the model with one-line usage errors. Cheap to import: the
catalog and the model load lazily, inside the calls."""

from __future__ import annotations

import os

import click
from rich.console import Console

stdout = Console()
stderr = Console(stderr=True)

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def split_values(values: tuple[str, ...]) -> list[str]:
    """Options given repeatedly or comma-separated, flattened."""
    return [v.strip() for value in values for v in value.split(",") if v.strip()]


def cores() -> int:
    """CPU cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def open_catalog(catalog: str):  # Catalog, imported lazily to keep --help fast
    from msconvert.catalog import Catalog, CatalogError

    try:
        return Catalog.open(catalog, mode="r")
    except CatalogError as exc:
        raise click.ClickException(str(exc)) from None


def open_clip(catalog: str, clip: str):  # xarray.Dataset
    cat = open_catalog(catalog)
    try:
        return cat[clip]
    except KeyError as exc:
        raise click.ClickException(str(exc.args[0]) if exc.args else str(exc)) from None


def catalog_exists(url: str) -> bool:
    from msconvert.catalog import Catalog, CatalogError

    try:
        Catalog.open(url, mode="r").close()
    except CatalogError:
        return False
    return True


def create_catalog(out: str, *, resume: bool, overwrite: bool):  # Catalog
    from msconvert.catalog import Catalog, CatalogError

    try:
        if catalog_exists(out) and not (resume or overwrite):
            raise click.UsageError(
                f"{out} already exists: pass --resume to continue it or --overwrite to replace it"
            )
        return Catalog.create(out, overwrite=overwrite)
    except CatalogError as exc:
        raise click.UsageError(str(exc)) from None


def check_model(options) -> None:  # PipelineOptions, imported lazily
    """Compile the model once up front, so a bad --model is one usage error, not N failures."""
    if not options.reaches("retarget"):
        return
    from msconvert.convert.pipeline import model_for
    from msconvert.emulator.model import ModelError, model_name, muscle_names

    try:
        model = model_for(options.model)
    except ModelError as exc:
        raise click.UsageError(str(exc)) from None
    stderr.print(
        f"Model: {model_name(model)} ({len(muscle_names(model))} muscles, nq={model.nq}); "
        f"reference at {options.control_hz:g} Hz"
    )
