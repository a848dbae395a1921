"""The commands about policies: train one on catalog clips, copy one out, replay one.

The learning code (JAX) loads inside the commands, so that `msconvert --help` stays fast.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

import click

from msconvert.convert import checkpoint_store
from msconvert.convert.cli_common import (
    CONTEXT,
    check_model,
    create_catalog,
    open_catalog,
    open_clip,
    stderr,
)
from msconvert.convert.options import (
    CLIP_ID,
    MODEL,
    RESUME,
    SOLUTION,
    STOCHASTIC,
    check_out,
    out,
    training_options,
    use,
)


@click.command(context_settings=CONTEXT)
@click.argument("catalog")
@click.argument("clips", nargs=-1, required=True)
@use(out(), RESUME, MODEL, training_options)
def train(
    catalog: str,
    clips: tuple[str, ...],
    out: str,
    resume: bool,
    model_path: str | None,
    **training: Any,
) -> None:
    """Train one muscle policy that tracks the retargeted CLIPS of CATALOG.

    The clips must have been converted with at least --until retarget. One policy is trained for
    all the clips given (multi-clip when several). Checkpoints are written to the directory --out
    as training goes; --resume continues a killed run.

    The budget, backend, environments and evaluations come from --preset (default demo), as
    for `msconvert amass`; --budget-steps, --budget-minutes, --backend, --envs and --evaluations
    override one part of it.

    \b
    Examples:
      msconvert train catalog.zarr DemoLab/subject1/walking --out ckpt/walk --budget-minutes 5
      msconvert train catalog.zarr A/run B/walk --out ckpt/ab --agent ppo --reward deepmimic
      msconvert train catalog.zarr KIT/3/walk --out ckpt/walk --preset gpu
    """
    from msconvert.convert.pipeline import PipelineOptions, model_for
    from msconvert.convert.progress import TrainProgress
    from msconvert.convert.training import references_from_catalog
    from msconvert.emulator.learn import compiling
    from msconvert.emulator.learn.checkpoint import CheckpointError
    from msconvert.emulator.learn.runs import check_model as check_references
    from msconvert.emulator.learn.runs import train_policy
    from msconvert.emulator.learn.train import TrainError
    from msconvert.emulator.model import ModelError, model_sha256
    from msconvert.emulator.retarget.reference import ReferenceFormatError

    out = check_out(out, file_okay=False)
    compile_cache = training.pop("compile_cache")
    cat = open_catalog(catalog)
    try:
        refs, solutions = references_from_catalog(cat, clips)
    except (KeyError, ReferenceFormatError) as exc:
        raise click.ClickException(str(exc.args[0]) if exc.args else str(exc)) from None
    try:
        model = model_for(model_path)
        check_references(refs, model_sha256(model))
        options = PipelineOptions(until="train", model=model_path, **training)
        config = options.train_config()  # the preset, then the options given
    except (ModelError, TrainError) as exc:
        raise click.UsageError(str(exc)) from None
    stderr.print(
        f"Training {config.agent} + {config.reward} on {len(refs)} "
        f"clip{'s' if len(refs) > 1 else ''} (preset {options.preset}: {config.n_envs} envs, "
        f"budget {config.budget_steps:,} env steps"
        + (f" or {config.budget_minutes:g} min" if config.budget_minutes else "")
        + f") -> {out}"
    )
    if compile_cache is None:  # beside the catalog's policies when it is a local one
        beside = None if "://" in catalog else f"{Path(catalog).resolve()}.checkpoints"
        compile_cache = compiling.default_cache_dir(beside)
    cache = compiling.use_cache(compile_cache)
    try:
        with (
            TrainProgress(
                config.budget_steps, "train", budget_minutes=config.budget_minutes
            ) as bar,
            compiling.watch(bar.compile_started, bar.compile_ended) as compiles,
        ):
            _, policy = train_policy(
                refs,
                model,
                config,
                out,
                solutions=solutions,
                resume=resume,
                progress=bar.update,
            )
    except (TrainError, CheckpointError) as exc:
        raise click.UsageError(str(exc)) from None
    except KeyboardInterrupt:
        stderr.print(f"[red]Interrupted.[/] Rerun with --resume to continue from {out}")
        sys.exit(130)
    hits = sum(c.cache_hit for c in compiles)
    stderr.print(
        f"Compiling took {sum(c.seconds for c in compiles):.1f} s ({len(compiles)} functions, "
        f"{hits} from the persistent cache in {cache})"
    )
    last = policy.curve[-1] if policy.curve else {}
    stderr.print(
        f"Trained {policy.step:,} env steps in {last.get('seconds', 0.0) / 60:.1f} min; "
        f"training-rollout joint error {last.get('joint_error_deg', float('nan')):.1f}°, "
        f"key-body error {last.get('body_error_mm', float('nan')):.0f} mm. Checkpoint: {out}"
    )
    evals = [r for r in policy.curve if "eval_score" in r]
    if evals:
        best = min(evals, key=lambda r: r["eval_score"])
        scale = best.get("eval_select_scale")
        how, error, tracked = "", best["eval_joint_error_deg"], best["eval_fraction_tracked"]
        if scale == 0.0:
            how = ", with the root assist off"
            error, tracked = best["eval_off_joint_error_deg"], best["eval_off_fraction_tracked"]
        elif scale is not None:
            how = (
                f", at root-assist scale {scale:.2f} ({best['eval_assist_force_pct_bw']:.1f}% "
                "of body weight of assist force on average)"
            )
        stderr.print(
            f"Exported the snapshot at {best['env_steps']:,.0f} env steps (best of {len(evals)} "
            f"evaluated): emulation joint error {error:.1f}°, {100 * tracked:.0f}% of frames "
            f"tracked{how}."
        )


@click.command(name="export-checkpoint", context_settings=CONTEXT)
@click.argument("catalog")
@click.argument("clip")
@use(out(), SOLUTION)
def export_checkpoint(catalog: str, clip: str, out: str, solution: int | None) -> None:
    """Copy the policy that produced CLIP (Orbax checkpoint, config, policy.json layout) to the
    directory --out; of a clip converted with --method rl --solutions K, the policy of
    --solution.

    \b
    Example:
      msconvert export-checkpoint catalog.zarr DemoLab/subject1/walking --out ckpt/walk
      msconvert export-checkpoint catalog.zarr KIT/3/walk --solution 2 --out ckpt/walk2
    """
    from msconvert.dims import SolutionError, check_solution, solution_count
    from msconvert.emulator.learn.checkpoint import META_FILE, CheckpointError, export

    out = check_out(out, file_okay=False)
    ds = open_clip(catalog, clip)
    source = ds.attrs.get("checkpoint")
    if not source:
        raise click.ClickException(f"clip {clip!r} has no policy (method {ds.attrs.get('method')})")
    if solution:
        try:
            check_solution(clip, solution_count(ds), solution)
        except SolutionError as exc:
            raise click.ClickException(str(exc)) from None
        source = ds.attrs["solution_checkpoints"][solution]
    try:
        if checkpoint_store.is_remote(source):  # beside a catalog on a store: fetched first
            with tempfile.TemporaryDirectory(prefix="msconvert-checkpoint-") as local:
                if checkpoint_store.fetch(source, local) is None:
                    raise CheckpointError(f"no finished checkpoint at {source}")
                step = export(local, out, clip)
        else:
            step = export(source, out, clip)
    except CheckpointError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{out} (step {step:,}; {META_FILE} describes the observation and action layout)")


@click.command(context_settings=CONTEXT)
@click.argument("checkpoint", type=click.Path(exists=True, file_okay=False))
@click.argument("motion_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@use(out(), CLIP_ID, MODEL, STOCHASTIC)
def emulate(
    checkpoint: str,
    motion_file: Path,
    out: str,
    clip_id: str | None,
    model_path: str | None,
    stochastic: int,
) -> None:
    """Re-run a saved policy on MOTION_FILE (retargeted first) and write the emulation to the
    catalog --out.

    \b
    Example:
      msconvert export-checkpoint c.zarr DemoLab/subject1/walking --out ckpt/walk
      msconvert emulate ckpt/walk walking_poses.npz --out again.zarr
    """
    from msconvert.convert.pipeline import PipelineOptions, replay_policy, write_outcome
    from msconvert.datasets.amass import SUFFIXES, ClipSource, clip_id_for

    suffix = next((s for s in SUFFIXES if motion_file.name.endswith(s)), None)
    cid = clip_id or clip_id_for(motion_file.name)
    source = ClipSource(
        path=motion_file,
        relpath=motion_file.name,
        clip_id=cid,
        body_model=SUFFIXES[suffix] if suffix else "smplh",
    )
    options = PipelineOptions(until="emulate", model=model_path, stochastic=stochastic)
    check_model(options)
    catalog = create_catalog(out, resume=True, overwrite=False)
    outcome = replay_policy(source, options, checkpoint)
    with catalog:
        write_outcome(catalog, outcome)
        catalog.flush_index()
    if outcome.status != "complete":
        raise click.ClickException(f"{cid}: {outcome.reason}")
    m = outcome.metrics
    stderr.print(
        f"{cid}: joint error {m['tracking.joint_error_deg_mean']:.1f}° mean "
        f"(worst joint {m['tracking.joint_error_deg_worst']:.1f}°), tracked "
        f"{100 * m['tracking.fraction_tracked']:.0f}% of the clip -> {out}"
    )


COMMANDS = (train, export_checkpoint, emulate)
