"""The `msconvert` command line: parses, schedules and reports; holds no physics and no learning.

This module holds the `main` group and the converting commands (amass, retarget, demo-corpus);
the commands that read a catalog are in commands_catalog.py, those about policies in
commands_policies.py, and every option is declared once, in options.py.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import click

from msconvert import __version__
from msconvert.convert import checkpoint_store, commands_catalog, commands_policies
from msconvert.convert.cli_common import CONTEXT, check_model, cores, create_catalog, stderr
from msconvert.convert.options import (
    BROKEN,
    CLIP_ID,
    EXCLUDE,
    INCLUDE,
    JOINT_MAP,
    LIMIT,
    OVERWRITE,
    RESUME,
    STRESS,
    UNTIL,
    WORKERS,
    conversion_options,
    executor_options,
    out,
    rl_options,
    use,
)


@click.group(context_settings=CONTEXT)
@click.version_option(__version__, prog_name="msconvert")
def main() -> None:
    """Convert motion-capture corpora into muscle-driven emulations, stored as a Zarr catalog.

    \b
    Typical use:
      msconvert amass ./AMASS --out catalog.zarr     # convert a corpus
      msconvert ls catalog.zarr                      # what is in it, with metrics
      msconvert query catalog.zarr KIT/3/walking_slow08 --field source_joints --joints left_knee
      msconvert info catalog.zarr KIT/3/walking_slow08
    """


@main.command(context_settings=CONTEXT)
@click.argument("root", type=click.Path(file_okay=False, path_type=Path))
@use(out(), UNTIL, RESUME, OVERWRITE, WORKERS, executor_options, INCLUDE, EXCLUDE, LIMIT)
@conversion_options
@rl_options
def amass(
    root: Path,
    out: str,
    until: str | None,
    resume: bool,
    overwrite: bool,
    workers: int,
    executor: str,
    ray_address: str | None,
    cpus_per_clip: int,
    memory_per_clip: float | None,
    max_retries: int,
    include: tuple[str, ...],
    exclude: tuple[str, ...],
    limit: int | None,
    source_format: str = "amass",  # or 'bvh:<joint map>' (the bvh command)
    **conversion: Any,
) -> None:
    """Convert an AMASS corpus (SMPL-H *_poses.npz, SMPL-X *_stageii.npz) into a catalog.

    ROOT is searched recursively; clip ids are the corpus-relative paths without the suffix
    (KIT/3/walking_slow08). Every clip ends up complete or failed with a one-line reason; the
    exit code is 1 when any clip failed. The options marked rl apply to --method rl.

    \b
    Examples:
      msconvert amass ./AMASS --out catalog.zarr
      msconvert amass ./AMASS --out catalog.zarr --include 'KIT/*' --limit 20 --until retarget
      msconvert amass ./AMASS --out catalog.zarr --resume      # after a crash or Ctrl-C
      msconvert amass ./AMASS --out catalog.zarr --preset gpu --agent ppo
      msconvert amass ./AMASS --out catalog.zarr --method track --solutions 3
      msconvert amass ./AMASS --out s3://bucket/c.zarr --executor ray --ray-address auto
    """
    from msconvert.datasets.motion import MotionError

    conversion["policy"] = conversion.pop("policy_mode")
    if conversion["finetune_steps"] and conversion["policy"] != "multi-clip":
        raise click.UsageError("--finetune-steps tunes a shared policy: add --policy multi-clip")
    if conversion.get("checkpoints") is None:  # beside the catalog, on the same store
        conversion["checkpoints"] = (
            checkpoint_store.beside(out)
            if checkpoint_store.is_remote(out)
            else str(Path(out).with_name(Path(out).name + checkpoint_store.SUFFIX))
        )
    compile_cache = conversion.pop("compile_cache")
    options = _pipeline_options(until, conversion)
    if executor != "ray" and (ray_address or memory_per_clip or cpus_per_clip != 1):
        raise click.UsageError(
            "--ray-address, --cpus-per-clip, --memory-per-clip: add --executor ray"
        )
    if resume and overwrite:
        raise click.UsageError("--resume and --overwrite contradict each other; pick one")
    try:
        scan = _scan(source_format, root, include, exclude, limit)
    except MotionError as exc:
        raise click.UsageError(str(exc)) from None
    if scan.skipped:  # one line: how many and why; the first one named
        first = scan.skipped[0]
        stderr.print(
            f"{scan.summary()}; first: {first}",
            style="yellow",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
    sources = list(scan.sources)
    if not sources:
        kind = "BVH clips (*.bvh)" if _is_bvh(source_format) else _AMASS_FILES
        raise click.UsageError(
            f"no {kind} under {root}"
            + (" matching the include/exclude patterns" if include or exclude else "")
        )
    check_model(options)
    catalog = create_catalog(out, resume=resume, overwrite=overwrite)
    if overwrite and options.checkpoints:  # the policies belong to the catalog they replace
        if checkpoint_store.is_remote(options.checkpoints):
            checkpoint_store.remove(options.checkpoints)
        elif Path(options.checkpoints).is_dir():
            import shutil

            shutil.rmtree(options.checkpoints)
    ray = None
    if executor == "ray":
        ray = _ray_settings(
            options, ray_address, workers, cpus_per_clip, memory_per_clip, max_retries
        )
        n_workers = workers or cores()  # the local pool only serves --policy multi-clip here
    else:
        n_workers = workers or (os.cpu_count() or 1 if len(sources) >= 8 else 1)
    if n_workers == 1 and ray is None:  # clips one at a time: static optimization uses the cores
        options = replace(options, static_opt_processes=cores())
    where = "on Ray" if ray else f"{n_workers} worker{'s' if n_workers > 1 else ''}"
    stderr.print(
        f"Converting {len(sources)} clips from {root} to {out} (until {options.until}, {where})"
    )
    if options.method == "rl" and options.reaches("train"):
        from msconvert.emulator.learn import compiling

        # Set here and in the environment, which the workers inherit (their JAX reads it there).
        cache = compiling.use_cache(
            compile_cache or compiling.default_cache_dir(options.checkpoints), environ=True
        )
        stderr.print(f"Compiled training code is cached in {cache}")
        _print_training_estimate(options, len(sources), n_workers)
    _convert(sources, catalog, out, options, workers=n_workers, resume=resume, ray=ray)


@main.command(context_settings=CONTEXT)
@click.argument("root", type=click.Path(file_okay=False, path_type=Path))
@use(out(), JOINT_MAP, UNTIL, RESUME, OVERWRITE, WORKERS, executor_options, INCLUDE, EXCLUDE)
@use(LIMIT, conversion_options, rl_options)
@click.pass_context
def bvh(ctx: click.Context, root: Path, joint_map: str, **kwargs: Any) -> None:
    """Convert a BVH corpus (*.bvh: CMU's BVH conversion, LAFAN1, any standard hierarchy).

    A joint map names the file's joint for each of the 22 SMPL body joints (--map; the README
    says how to write one). Each clip records its format as 'bvh:<map>' (msconvert ls
    --source-format bvh); everything else is as for amass, whose options apply.

    \b
    Examples:
      msconvert bvh ./cmu_bvh --out catalog.zarr --map cmu --until retarget
      msconvert bvh ./lafan1 --out catalog.zarr --map lafan1
      msconvert bvh ./mine --out catalog.zarr --map my_skeleton.json
    """
    from msconvert.datasets.bvh import AUTO_MAP, JointMapError, load_joint_map

    if joint_map != AUTO_MAP:
        try:
            load_joint_map(joint_map)
        except JointMapError as exc:
            raise click.BadParameter(str(exc), param_hint="--map") from None
    ctx.invoke(amass, root=root, source_format=f"bvh:{joint_map}", **kwargs)


_AMASS_FILES = "AMASS clips (*_poses.npz, *_stageii.npz)"


def _is_bvh(source_format: str) -> bool:
    return source_format.partition(":")[0] == "bvh"


def _scan(source_format: str, root: Path, include, exclude, limit):
    """The corpus's clip files: AMASS's, or *.bvh read with the format's joint map."""
    if _is_bvh(source_format):
        from msconvert.datasets.bvh import scan_bvh_corpus

        joint_map = source_format.partition(":")[2]
        return scan_bvh_corpus(root, joint_map, include=include, exclude=exclude, limit=limit)
    from msconvert.datasets.amass import scan_corpus

    return scan_corpus(root, include=include, exclude=exclude, limit=limit)


def _ray_settings(options, address, workers, cpus, memory_gib, retries):
    """The Ray executor's settings from the amass options (RaySettings)."""
    from msconvert.convert.executors import RaySettings
    from msconvert.convert.pipeline import ray_task_needs

    gpus, memory = ray_task_needs(options)
    return RaySettings(
        address=address,
        local_cpus=workers or None,
        cpus=float(cpus),
        gpus=gpus,
        memory=int(memory_gib * 1024**3) if memory_gib else memory,
        max_retries=retries,
    )


@main.command(context_settings=CONTEXT)
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@use(out(), CLIP_ID, UNTIL)
@conversion_options
def retarget(
    file: Path, out: str, clip_id: str | None, until: str | None, **conversion: Any
) -> None:
    """Retarget one AMASS file onto the model and write it as one clip of the catalog --out.

    The catalog is created when missing; other clips in it are kept, and a clip of the same id
    is replaced. Stops after retarget unless --until says otherwise.

    \b
    Example:
      msconvert retarget walk_poses.npz --out catalog.zarr --model my_model.xml
    """
    from msconvert.catalog.schema import ClipIdError, sanitize_clip_id
    from msconvert.datasets.amass import SUFFIXES, ClipSource, clip_id_for

    options = _pipeline_options(until or "retarget", conversion)
    suffix = next((s for s in SUFFIXES if file.name.endswith(s)), None)
    body_model = SUFFIXES[suffix] if suffix else "smplh"
    try:
        cid = sanitize_clip_id(clip_id) if clip_id else clip_id_for(file.name)
    except ClipIdError as exc:
        raise click.BadParameter(str(exc), param_hint="--clip-id") from None
    source = ClipSource(path=file, relpath=file.name, clip_id=cid, body_model=body_model)
    check_model(options)
    options = replace(options, static_opt_processes=cores())
    catalog = create_catalog(out, resume=True, overwrite=False)
    stderr.print(f"Retargeting {file} to {out} as clip {cid}")
    _convert([source], catalog, out, options, workers=1, resume=False)


@main.command(name="demo-corpus", context_settings=CONTEXT)
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@use(BROKEN, STRESS)
def demo_corpus(directory: Path, broken: bool, stress: bool) -> None:
    """Write the bundled synthetic demo corpus (AMASS layout, made by msconvert's own code).

    \b
    Examples:
      msconvert demo-corpus ./demo && msconvert amass ./demo --out demo.zarr
      msconvert demo-corpus ./stress --stress && msconvert amass ./stress/Stress --out s.zarr
    """
    from msconvert.datasets.demo import write_broken_corpus, write_demo_corpus, write_stress_corpus

    paths = write_demo_corpus(directory)
    stderr.print(f"Wrote {len(paths)} demo clips under {directory}")
    if stress:
        written = write_stress_corpus(directory)
        stderr.print(f"Wrote {len(written)} stress clips under {directory / 'Stress'}")
    if broken:
        bad = write_broken_corpus(directory / "broken")
        stderr.print(f"Wrote {len(bad)} broken files under {directory / 'broken'}")


for _command in (*commands_catalog.COMMANDS, *commands_policies.COMMANDS):
    main.add_command(_command)


def _print_training_estimate(options, n_clips: int, workers: int) -> None:
    """Before long work: what will be trained, and at most how long it takes."""
    config = options.train_config()
    policies = 1 if options.policy == "multi-clip" else n_clips * options.solutions
    line = (
        f"Training {policies} {options.agent} + {options.reward} "
        f"polic{'y' if policies == 1 else 'ies'} (preset {options.preset}: {config.n_envs} envs, "
        f"{config.budget_steps:,} env steps"
    )
    if config.budget_minutes:
        total = config.budget_minutes * policies / max(workers, 1)
        line += f", <= {config.budget_minutes:g} min each); estimated total <= {total:.3g} min "
        line += "of training, plus retargeting, warm start and emulation"
    else:
        line += ", no time cap: the time follows the machine's env steps/s"
        line += ", shown on the progress bar)"
    if options.policy == "multi-clip" and options.finetune_steps:
        line += f"; then {n_clips} per-clip fine-tunes of {options.finetune_steps:,} env steps" + (
            f" (<= {options.budget_minutes:g} min each)" if options.budget_minutes else ""
        )
    stderr.print(line + f". Checkpoints: {options.checkpoints}")


def _pipeline_options(until: str | None, conversion: dict[str, Any]):
    """PipelineOptions from the shared conversion options; a stage not built is a usage error."""
    from msconvert.convert.pipeline import (
        PipelineOptions,
        StageNotAvailableError,
        check_solutions,
        check_until,
        default_until,
    )

    method = conversion["method"]
    until = until or default_until(method)
    try:
        check_until(until, method)
        check_solutions(
            conversion["solutions"],
            method,
            conversion.get("policy", "per-clip"),
            conversion.get("warm_start", "track"),
            conversion.get("residual", True),
        )
    except StageNotAvailableError as exc:
        raise click.UsageError(str(exc)) from None
    model = conversion.pop("model_path")
    return PipelineOptions(until=until, model=model, **conversion)


def _convert(sources, catalog, out: str, options, *, workers: int, resume: bool, ray=None) -> None:
    """Run the batch with a progress bar, print the summary; exit 1 when any clip failed.
    With `ray` (RaySettings) the clips run as Ray tasks (convert/executors.py)."""
    from msconvert.catalog import CatalogLockedError
    from msconvert.convert.executors import ExecutorError
    from msconvert.convert.pipeline import run_batch
    from msconvert.convert.progress import BatchProgress, summary_table

    if options.body_model_mode == "mean-skeleton" and not all(
        _is_bvh(s.body_model) for s in sources
    ):  # a BVH clip brings its own skeleton
        stderr.print(
            "[yellow]Body model:[/] built-in mean-shape SMPL skeleton; betas are ignored "
            "(pass --body-models DIR for exact SMPL-H/SMPL-X joints)."
        )
    try:
        # The lease first: a second run on the catalog is refused before any cluster starts.
        with catalog, catalog.lease(), _cluster(ray, out) as cluster:
            with BatchProgress(len(sources), "clips", nodes=ray is not None) as bar:
                report = run_batch(
                    sources,
                    catalog,
                    options,
                    workers=workers,
                    resume=resume,
                    on_outcome=bar.outcome,
                    on_skip=bar.skipped,
                    on_node=bar.node,
                    ray=cluster,
                )
    except (CatalogLockedError, ExecutorError) as exc:
        raise click.ClickException(str(exc)) from None
    except KeyboardInterrupt:
        stderr.print(f"[red]Interrupted.[/] Finished clips are saved; rerun with --resume {out}")
        sys.exit(130)
    stderr.print(summary_table(report))
    stderr.print(f"Catalog: {out}   (msconvert ls {out})")
    if report.failed:
        sys.exit(1)


@contextlib.contextmanager
def _cluster(settings, out: str) -> Iterator[Any]:  # RaySettings
    """The connected RayCluster for these settings (None: the local executor), described."""
    if settings is None:
        yield None
        return
    from msconvert.convert.executors import RayCluster

    with RayCluster(settings) as cluster:
        s = settings
        needs = f"{s.cpus:g} CPU{'s' if s.cpus != 1 else ''}"
        needs += f", {s.gpus:g} GPU" if s.gpus else ""
        needs += f", {s.memory / 1024**3:.1f} GiB of memory" if s.memory else ""
        stderr.print(
            f"Ray: {cluster.describe()}; each clip task declares {needs}; a clip whose worker "
            f"or node dies is retried up to {s.max_retries} times"
        )
        unfit = cluster.unfit()
        if unfit:
            stderr.print(
                f"[yellow]Note:[/] {unfit}: clips wait until such a node joins (autoscaling); "
                "lower --cpus-per-clip or --memory-per-clip, or Ctrl-C."
            )
        if "://" not in out and cluster.node_count() > 1:
            stderr.print(
                f"[yellow]Note:[/] every node writes to {out}: it must be the same shared "
                "folder on all of them (or use an object-store URL, e.g. s3://bucket/c.zarr)."
            )
        yield cluster
