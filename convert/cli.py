"""The `msconvert` command line: parses, schedules and reports; holds no physics and no learning."""

from __future__ import annotations

import csv
import io
import json
import os
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import click
import numpy as np
import xarray as xr
from rich.console import Console
from rich.table import Table

from msconvert import __version__
from msconvert.convert.presets import presets_help

stdout = Console()
stderr = Console(stderr=True)

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


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


def _split(values: tuple[str, ...]) -> list[str]:
    """Options given repeatedly or comma-separated, flattened."""
    return [v.strip() for value in values for v in value.split(",") if v.strip()]


def conversion_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The options of every converting command (amass, retarget): body model, model, rates."""
    for option in reversed(_CONVERSION_OPTIONS):
        command = option(command)
    return command


_CONVERSION_OPTIONS = [
    click.option(
        "--method",
        type=click.Choice(["rl", "static-opt"]),
        default="rl",
        show_default=True,
        help="rl: learn a muscle policy per clip (train, emulate). static-opt: inverse dynamics "
        "+ static optimization per frame, the fast classic answer (no policy).",
    ),
    click.option(
        "--static-opt-cost",
        type=click.Choice(["act2", "act3"]),
        default="act2",
        show_default=True,
        help="static-opt: minimize the sum of activations squared or cubed.",
    ),
    click.option(
        "--body-models",
        type=click.Path(exists=True, file_okay=False),
        default=None,
        help="Directory of your licensed SMPL-H/SMPL-X model files (.npz) for exact joints. "
        "Without it a built-in mean-shape skeleton is used and betas are ignored.",
    ),
    click.option(
        "--allow-pickle-body-models",
        is_flag=True,
        help="Also read .pkl body-model files (unpickling: only for files you trust).",
    ),
    click.option(
        "--source-fps",
        type=click.FloatRange(min=1.0, max=1000.0),
        default=None,
        help="Resample the stored source kinematics to this rate (slerp on rotations). "
        "Default: keep each file's own rate.",
    ),
    click.option(
        "--model",
        "model_path",
        type=click.Path(exists=True, dir_okay=False),
        default=None,
        help="MJCF of the musculoskeletal model. Default: MyoFullBody (416 muscles).",
    ),
    click.option(
        "--retarget-config",
        type=click.Path(exists=True, dir_okay=False),
        default=None,
        help="Correspondence file (JSON) mapping SMPL joints to the model's bodies. "
        "Default: the one packaged for the model.",
    ),
    click.option(
        "--control-hz",
        type=click.FloatRange(min=10.0, max=500.0),
        default=50.0,
        show_default=True,
        help="Rate of the retargeted reference (the control rate).",
    ),
]


_RL_OPTIONS = [
    click.option(
        "--preset",
        type=click.Choice(["demo", "cpu", "gpu"]),
        default="demo",
        show_default=True,
        help="Training budget per clip (rl). " + presets_help() + ".",
    ),
    click.option(
        "--agent",
        type=click.Choice(["flow", "gaussian", "ppo"]),
        default="flow",
        show_default=True,
        help="rl learner: flow (ours), gaussian (ablation), ppo (the standard recipe).",
    ),
    click.option(
        "--reward",
        type=click.Choice(["adversarial", "deepmimic"]),
        default="adversarial",
        show_default=True,
        help="rl tracking reward: adversarial aggregation (ours) or DeepMimic's weighted sum.",
    ),
    click.option(
        "--warm-start/--no-warm-start",
        default=True,
        show_default=True,
        help="rl: behaviour-clone static-optimization excitations before training.",
    ),
    click.option(
        "--policy",
        "policy_mode",
        type=click.Choice(["per-clip", "multi-clip"]),
        default="per-clip",
        show_default=True,
        help="rl: one policy per clip, or one for all the clips of the run.",
    ),
    click.option(
        "--checkpoints",
        type=click.Path(file_okay=False),
        default=None,
        help="rl: where policies are saved. Default: CATALOG.checkpoints beside a local catalog.",
    ),
    click.option("--seed", type=int, default=0, show_default=True, help="rl: training seed."),
    click.option(
        "--budget-steps",
        type=click.IntRange(min=1),
        default=None,
        help="rl: env steps per policy (overrides the preset).",
    ),
    click.option(
        "--budget-minutes",
        type=click.FloatRange(min=0.0, min_open=True),
        default=None,
        help="rl: wall minutes per policy (overrides the preset).",
    ),
    click.option(
        "--envs",
        "n_envs",
        type=click.IntRange(min=1),
        default=None,
        help="rl: parallel environments (overrides the preset).",
    ),
    click.option(
        "--backend",
        type=click.Choice(["auto", "mjx", "cpu"]),
        default=None,
        help="rl: simulation backend for training (overrides the preset).",
    ),
    click.option(
        "--checkpoint-every",
        "checkpoint_every_s",
        type=click.FloatRange(min=0.0),
        default=120.0,
        show_default=True,
        metavar="SECONDS",
        help="rl: save the training state this often (and at the end); a killed run resumes "
        "from the last save with --resume.",
    ),
    click.option(
        "--stochastic",
        type=click.IntRange(min=0),
        default=0,
        show_default=True,
        metavar="K",
        help="rl: also roll the policy out K times with sampled actions (seeds 1..K): "
        "stochastic_* arrays with a 'rollout' dim, tracking.stochastic_* metrics.",
    ),
    click.option(
        "--finetune-steps",
        type=click.IntRange(min=0),
        default=0,
        show_default=True,
        metavar="N",
        help="rl, --policy multi-clip: fine-tune a copy of the shared policy on each clip for N "
        "env steps before emulating it (0: emulate with the shared policy).",
    ),
]


def rl_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The options of the learned method (amass --method rl)."""
    for option in reversed(_RL_OPTIONS):
        command = option(command)
    return command


@main.command(context_settings=CONTEXT)
@click.argument("root", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--out",
    "out",
    required=True,
    metavar="CATALOG",
    help="Catalog to write: a local path or an fsspec URL (e.g. s3://bucket/c.zarr).",
)
@click.option(
    "--until",
    type=click.Choice(["ingest", "retarget", "train", "emulate"]),
    default=None,
    help="Stop after this stage. Default: emulate, the last stage (static-opt has no train).",
)
@click.option(
    "--resume",
    is_flag=True,
    help="Continue an existing catalog: redo only clips that are missing, failed or "
    "half-written (e.g. after a crash or a kill).",
)
@click.option("--overwrite", is_flag=True, help="Replace an existing catalog.")
@click.option(
    "--workers",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Worker processes; 0 = one per CPU core for 8 clips or more, else 1.",
)
@click.option(
    "--include",
    multiple=True,
    metavar="GLOB",
    help="Only clips whose id or path matches (repeatable), e.g. 'KIT/*'.",
)
@click.option(
    "--exclude",
    multiple=True,
    metavar="GLOB",
    help="Skip clips whose id or path matches (repeatable).",
)
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=None,
    help="Convert at most N clips (after include/exclude, in id order).",
)
@conversion_options
@rl_options
def amass(
    root: Path,
    out: str,
    until: str | None,
    resume: bool,
    overwrite: bool,
    workers: int,
    include: tuple[str, ...],
    exclude: tuple[str, ...],
    limit: int | None,
    **conversion: Any,
) -> None:
    """Convert an AMASS corpus (SMPL-H *_poses.npz, SMPL-X *_stageii.npz) into a catalog.

    ROOT is searched recursively; clip ids are the corpus-relative paths without the suffix
    (KIT/3/walking_slow08). Every clip ends up complete or failed with a one-line reason; the
    exit code is 1 when any clip failed.

    \b
    Examples:
      msconvert amass ./AMASS --out catalog.zarr
      msconvert amass ./AMASS --out catalog.zarr --include 'KIT/*' --limit 20 --until retarget
      msconvert amass ./AMASS --out catalog.zarr --resume      # after a crash or Ctrl-C
    """
    from msconvert.datasets.amass import scan_corpus
    from msconvert.datasets.motion import MotionError

    conversion["policy"] = conversion.pop("policy_mode")
    if conversion["finetune_steps"] and conversion["policy"] != "multi-clip":
        raise click.UsageError("--finetune-steps tunes a shared policy: add --policy multi-clip")
    if conversion.get("checkpoints") is None and "://" not in out:
        conversion["checkpoints"] = str(Path(out).with_name(Path(out).name + ".checkpoints"))
    options = _pipeline_options(until, conversion)
    if resume and overwrite:
        raise click.UsageError("--resume and --overwrite contradict each other; pick one")
    try:
        scan = scan_corpus(root, include=include, exclude=exclude, limit=limit)
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
        raise click.UsageError(
            f"no AMASS clips (*_poses.npz, *_stageii.npz) under {root}"
            + (" matching the include/exclude patterns" if include or exclude else "")
        )
    _check_model(options)
    catalog = _create_catalog(out, resume=resume, overwrite=overwrite)
    if overwrite and options.checkpoints and Path(options.checkpoints).is_dir():
        import shutil

        shutil.rmtree(options.checkpoints)  # the policies belong to the catalog they replace
    n_workers = workers or (os.cpu_count() or 1 if len(sources) >= 8 else 1)
    if n_workers == 1:  # clips one at a time: let static optimization use the cores
        options = replace(options, static_opt_processes=_cores())
    stderr.print(
        f"Converting {len(sources)} clips from {root} to {out} (until {options.until}, "
        f"{n_workers} worker{'s' if n_workers > 1 else ''})"
    )
    if options.method == "rl" and options.reaches("train"):
        _print_training_estimate(options, len(sources), n_workers)
    _convert(sources, catalog, out, options, workers=n_workers, resume=resume)


@main.command(context_settings=CONTEXT)
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--out",
    "out",
    required=True,
    metavar="CATALOG",
    help="Catalog to write into; created when missing, other clips in it are kept.",
)
@click.option(
    "--clip-id",
    default=None,
    help="Id of the clip in the catalog. Default: the file name without its suffix.",
)
@click.option(
    "--until",
    type=click.Choice(["ingest", "retarget", "train", "emulate"]),
    default="retarget",
    show_default=True,
    help="Stop after this stage.",
)
@conversion_options
def retarget(file: Path, out: str, clip_id: str | None, until: str, **conversion: Any) -> None:
    """Retarget one AMASS file onto the model and write it as one clip of CATALOG.

    A clip of the same id already in CATALOG is replaced.

    \b
    Example:
      msconvert retarget walk_poses.npz --out catalog.zarr --model my_model.xml
    """
    from msconvert.catalog.schema import ClipIdError, sanitize_clip_id
    from msconvert.datasets.amass import SUFFIXES, ClipSource, clip_id_for

    options = _pipeline_options(until, conversion)
    suffix = next((s for s in SUFFIXES if file.name.endswith(s)), None)
    body_model = SUFFIXES[suffix] if suffix else "smplh"
    try:
        cid = sanitize_clip_id(clip_id) if clip_id else clip_id_for(file.name)
    except ClipIdError as exc:
        raise click.BadParameter(str(exc), param_hint="--clip-id") from None
    source = ClipSource(path=file, relpath=file.name, clip_id=cid, body_model=body_model)
    _check_model(options)
    options = replace(options, static_opt_processes=_cores())
    catalog = _create_catalog(out, resume=True, overwrite=False)
    stderr.print(f"Retargeting {file} to {out} as clip {cid}")
    _convert([source], catalog, out, options, workers=1, resume=False)


def _print_training_estimate(options, n_clips: int, workers: int) -> None:  # noqa: ANN001
    """Before long work: what will be trained, and at most how long it takes."""
    config = options.train_config()
    policies = 1 if options.policy == "multi-clip" else n_clips
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


def _pipeline_options(until: str | None, conversion: dict[str, Any]):  # noqa: ANN202
    """PipelineOptions from the shared conversion options; a stage not built is a usage error."""
    from msconvert.convert.pipeline import (
        PipelineOptions,
        StageNotAvailableError,
        check_until,
        default_until,
    )

    method = conversion["method"]
    until = until or default_until(method)
    try:
        check_until(until, method)
    except StageNotAvailableError as exc:
        raise click.UsageError(str(exc)) from None
    model = conversion.pop("model_path")
    return PipelineOptions(until=until, model=model, **conversion)


def _cores() -> int:
    """CPU cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _create_catalog(out: str, *, resume: bool, overwrite: bool):  # noqa: ANN202 - Catalog
    from msconvert.catalog import Catalog, CatalogError

    try:
        if _catalog_exists(out) and not (resume or overwrite):
            raise click.UsageError(
                f"{out} already exists: pass --resume to continue it or --overwrite to replace it"
            )
        return Catalog.create(out, overwrite=overwrite)
    except CatalogError as exc:
        raise click.UsageError(str(exc)) from None


def _convert(sources, catalog, out: str, options, *, workers: int, resume: bool) -> None:  # noqa: ANN001
    """Run the batch with a progress bar, print the summary; exit 1 when any clip failed."""
    from msconvert.convert.pipeline import run_batch
    from msconvert.convert.progress import BatchProgress, summary_table

    if options.body_model_mode == "mean-skeleton":
        stderr.print(
            "[yellow]Body model:[/] built-in mean-shape SMPL skeleton; betas are ignored "
            "(pass --body-models DIR for exact SMPL-H/SMPL-X joints)."
        )
    try:
        with catalog, BatchProgress(len(sources), "clips") as bar:
            report = run_batch(
                sources,
                catalog,
                options,
                workers=workers,
                resume=resume,
                on_outcome=bar.outcome,
                on_skip=bar.skipped,
            )
    except KeyboardInterrupt:
        stderr.print(f"[red]Interrupted.[/] Finished clips are saved; rerun with --resume {out}")
        sys.exit(130)
    stderr.print(summary_table(report))
    stderr.print(f"Catalog: {out}   (msconvert ls {out})")
    if report.failed:
        sys.exit(1)


def _check_model(options) -> None:  # noqa: ANN001 - PipelineOptions, imported lazily
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


def _catalog_exists(url: str) -> bool:
    from msconvert.catalog import Catalog, CatalogError

    try:
        Catalog.open(url, mode="r").close()
    except CatalogError:
        return False
    return True


# The headline metrics of `ls`: the clip, how well the model follows it, how it was made.
LS_COLUMNS = (
    "source.duration_s",
    "retarget.position_error_mm",
    "static_opt.residual_pct",
    "emulate.tracking_error_mm",
    "emulate.fall_pct",
)


def _open(catalog: str):  # noqa: ANN202 - Catalog, imported lazily to keep --help fast
    from msconvert.catalog import Catalog, CatalogError

    try:
        return Catalog.open(catalog, mode="r")
    except CatalogError as exc:
        raise click.ClickException(str(exc)) from None


@main.command(context_settings=CONTEXT)
@click.argument("catalog")
@click.argument("clips", nargs=-1, required=True)
@click.option(
    "--out", "out", required=True, type=click.Path(file_okay=False), help="Checkpoint directory."
)
@click.option(
    "--agent",
    type=click.Choice(["flow", "gaussian", "ppo"]),
    default="flow",
    show_default=True,
    help="flow: value-guided flow policy (ours). gaussian: same learner, Gaussian policy "
    "(ablation). ppo: PPO with a Gaussian policy (the standard recipe).",
)
@click.option(
    "--reward",
    type=click.Choice(["adversarial", "deepmimic"]),
    default="adversarial",
    show_default=True,
    help="adversarial: learned aggregation of the tracking errors (ours). deepmimic: the "
    "hand-weighted sum of exponentials (baseline).",
)
@click.option(
    "--warm-start/--no-warm-start",
    default=True,
    show_default=True,
    help="Behaviour-clone static-optimization excitations before RL.",
)
@click.option(
    "--budget-steps",
    type=click.IntRange(min=1),
    default=20_000,
    show_default=True,
    help="Environment steps (summed over environments).",
)
@click.option(
    "--budget-minutes",
    type=click.FloatRange(min=0.0, min_open=True),
    default=None,
    help="Wall-time budget; training stops at whichever budget comes first.",
)
@click.option(
    "--backend",
    type=click.Choice(["auto", "mjx", "cpu"]),
    default="auto",
    show_default=True,
    help="auto: MJX on an accelerator, else MuJoCo's C engine.",
)
@click.option(
    "--envs",
    type=click.IntRange(min=1),
    default=16,
    show_default=True,
    help="Parallel environments.",
)
@click.option(
    "--evaluations",
    type=click.IntRange(min=0),
    default=8,
    show_default=True,
    help="Emulate the clips with this many snapshots spread over the budget (and the starting "
    "policy) and export the one that tracks best; 0 exports the last snapshot.",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--resume", is_flag=True, help="Continue from the last checkpoint in --out.")
@click.option(
    "--model",
    "model_path",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="MJCF the clips were retargeted onto. Default: MyoFullBody.",
)
def train(
    catalog: str,
    clips: tuple[str, ...],
    out: str,
    agent: str,
    reward: str,
    warm_start: bool,
    budget_steps: int,
    budget_minutes: float | None,
    backend: str,
    envs: int,
    evaluations: int,
    seed: int,
    resume: bool,
    model_path: str | None,
) -> None:
    """Train one muscle policy that tracks the retargeted CLIPS of CATALOG.

    The clips must have been converted with at least --until retarget. One policy is trained for
    all the clips given (multi-clip when several). Checkpoints are written to --out as training
    goes; --resume continues a killed run.

    \b
    Examples:
      msconvert train catalog.zarr DemoLab/subject1/walking --out ckpt/walk --budget-minutes 5
      msconvert train catalog.zarr A/run B/walk --out ckpt/ab --agent ppo --reward deepmimic
    """
    from msconvert.convert.pipeline import model_for
    from msconvert.convert.progress import TrainProgress
    from msconvert.convert.training import references_from_catalog
    from msconvert.emulator.learn.checkpoint import CheckpointError
    from msconvert.emulator.learn.runs import check_model, train_policy
    from msconvert.emulator.learn.train import TrainConfig, TrainError
    from msconvert.emulator.model import ModelError, model_sha256
    from msconvert.emulator.retarget.reference import ReferenceFormatError

    cat = _open(catalog)
    try:
        refs, solutions = references_from_catalog(cat, clips)
    except (KeyError, ReferenceFormatError) as exc:
        raise click.ClickException(str(exc.args[0]) if exc.args else str(exc)) from None
    try:
        model = model_for(model_path)
        check_model(refs, model_sha256(model))
    except (ModelError, TrainError) as exc:
        raise click.UsageError(str(exc)) from None
    config = TrainConfig(
        agent=agent,
        reward=reward,
        warm_start=warm_start,
        backend=backend,
        n_envs=envs,
        budget_steps=budget_steps,
        budget_minutes=budget_minutes,
        evaluations=evaluations,
        seed=seed,
    )
    stderr.print(
        f"Training {agent} + {reward} on {len(refs)} clip{'s' if len(refs) > 1 else ''} "
        f"({envs} envs, budget {budget_steps:,} env steps"
        + (f" or {budget_minutes:g} min" if budget_minutes else "")
        + f") -> {out}"
    )
    try:
        with TrainProgress(budget_steps, "train", budget_minutes=budget_minutes) as bar:
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
    last = policy.curve[-1] if policy.curve else {}
    stderr.print(
        f"Trained {policy.step:,} env steps in {last.get('seconds', 0.0) / 60:.1f} min; "
        f"training-rollout joint error {last.get('joint_error_deg', float('nan')):.1f}°, "
        f"key-body error {last.get('body_error_mm', float('nan')):.0f} mm. Checkpoint: {out}"
    )
    evals = [r for r in policy.curve if "eval_score" in r]
    if evals:
        best = min(evals, key=lambda r: r["eval_score"])
        stderr.print(
            f"Exported the snapshot at {best['env_steps']:,.0f} env steps (best of {len(evals)} "
            f"evaluated): emulation joint error {best['eval_joint_error_deg']:.1f}°, "
            f"{100 * best['eval_fraction_tracked']:.0f}% of frames tracked."
        )


@main.command(name="ls", context_settings=CONTEXT)
@click.argument("catalog")
@click.option(
    "--status",
    type=click.Choice(["complete", "failed"]),
    default=None,
    help="Only clips with this status.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "csv", "json"]),
    default="table",
    show_default=True,
)
@click.option(
    "--columns",
    default=",".join(LS_COLUMNS),
    show_default=True,
    help="Metrics shown in the table, comma-separated ('all' for every one). "
    "csv and json always carry every metric.",
)
def ls_command(catalog: str, status: str | None, fmt: str, columns: str) -> None:
    """List the clips of a catalog with their status, reason and metrics.

    \b
    Examples:
      msconvert ls catalog.zarr --status failed
      msconvert ls catalog.zarr --format csv > clips.csv
      msconvert ls catalog.zarr --columns all
    """
    cat = _open(catalog)
    entries = cat.clips(status=status)
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


def _fmt_metric(v: Any, exact: bool = False) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return repr(v) if exact else f"{v:.4g}"
    return str(v)


@main.command(context_settings=CONTEXT)
@click.argument("catalog")
@click.argument("clip")
@click.option(
    "--field",
    "field_name",
    required=True,
    help="Array to read, e.g. source_joints ((time, joint, xyz) world joint positions, m).",
)
@click.option(
    "--joints",
    multiple=True,
    metavar="NAMES",
    help="Joint labels to keep (comma-separated or repeated), e.g. left_knee,right_knee.",
)
@click.option(
    "--muscles",
    multiple=True,
    metavar="NAMES",
    help="Muscle labels to keep, e.g. soleus_r,gasmed_r (fields on the muscle dim).",
)
@click.option(
    "--sel",
    "selections",
    multiple=True,
    metavar="DIM=LABELS",
    help="Keep these labels of any dim (repeatable), e.g. --sel foot=left --sel xyz=z.",
)
@click.option("--start", type=float, default=None, help="Start time in seconds (inclusive).")
@click.option("--end", type=float, default=None, help="End time in seconds (inclusive).")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "csv", "npy", "json"]),
    default="table",
    show_default=True,
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write to this file instead of standard output.",
)
def query(
    catalog: str,
    clip: str,
    field_name: str,
    joints: tuple[str, ...],
    muscles: tuple[str, ...],
    selections: tuple[str, ...],
    start: float | None,
    end: float | None,
    fmt: str,
    out: Path | None,
) -> None:
    """Read one array of one clip, selected by label, as a table, CSV, .npy or JSON.

    \b
    Examples:
      msconvert query catalog.zarr KIT/3/walk --field source_joints --joints left_knee
      msconvert query catalog.zarr KIT/3/walk --field activation --muscles soleus_r --format csv
      msconvert query catalog.zarr KIT/3/walk --field grf --sel foot=left --sel xyz=z
    """
    cat = _open(catalog)
    sel: dict[str, list[str]] = {}
    if joints:
        sel["joint"] = _split(joints)
    if muscles:
        sel["muscle"] = _split(muscles)
    for item in selections:
        dim, eq, labels = item.partition("=")
        if not eq or not dim.strip() or not _split((labels,)):
            raise click.BadParameter(f"expected DIM=LABELS, got {item!r}", param_hint="--sel")
        sel.setdefault(dim.strip(), []).extend(_split((labels,)))
    time_range = (start, end) if start is not None or end is not None else None
    try:
        arr = cat.read_variable(clip, field_name, sel=sel or None, time_range=time_range)
    except KeyError as exc:
        raise click.ClickException(str(exc.args[0]) if exc.args else str(exc)) from None
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    _emit(arr, clip, fmt, out)


def _emit(arr: xr.DataArray, clip: str, fmt: str, out: Path | None) -> None:
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


@main.command(context_settings=CONTEXT)
@click.argument("catalog")
@click.argument("clip")
@click.option(
    "--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True
)
def info(catalog: str, clip: str, fmt: str) -> None:
    """Show a clip's attributes (provenance, settings, metrics) and its arrays' shapes."""
    cat = _open(catalog)
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


@main.command(name="demo-corpus", context_settings=CONTEXT)
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--broken",
    is_flag=True,
    help="Also write a set of deliberately broken files (for testing error handling).",
)
def demo_corpus(directory: Path, broken: bool) -> None:
    """Write the bundled synthetic demo corpus (AMASS layout, made by msconvert's own code)."""
    from msconvert.datasets.demo import write_broken_corpus, write_demo_corpus

    paths = write_demo_corpus(directory)
    stderr.print(f"Wrote {len(paths)} demo clips under {directory}")
    if broken:
        bad = write_broken_corpus(directory / "broken")
        stderr.print(f"Wrote {len(bad)} broken files under {directory / 'broken'}")


def _clip(catalog: str, clip: str):  # noqa: ANN202 - xarray.Dataset
    cat = _open(catalog)
    try:
        return cat[clip]
    except KeyError as exc:
        raise click.ClickException(str(exc.args[0]) if exc.args else str(exc)) from None


@main.command(context_settings=CONTEXT)
@click.argument("catalog")
@click.argument("clip")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["csv", "sto", "mot", "npz"]),
    required=True,
    help="sto: OpenSim storage of muscle quantities; mot: OpenSim motion (degrees); csv; npz.",
)
@click.option("--fields", default=None, help="Comma-separated arrays (default: per format).")
@click.option("--out", required=True, type=click.Path(), help="File prefix or directory.")
@click.option(
    "--model",
    "model_path",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="mot: the MJCF the clip was made with, when it is not the default model.",
)
def export(
    catalog: str, clip: str, fmt: str, fields: str | None, out: str, model_path: str | None
) -> None:
    """Write one clip in a format other tools read (OpenSim .sto/.mot, CSV, NumPy .npz).

    \b
    Examples:
      msconvert export catalog.zarr KIT/3/walk --format sto --out walk  # walk_activation.sto ...
      msconvert export catalog.zarr KIT/3/walk --format mot --out walk.mot  # joint angles, degrees
      msconvert export catalog.zarr KIT/3/walk --format csv --fields grf,activation --out walk
    """
    from msconvert.convert.exports import export_clip

    ds = _clip(catalog, clip)
    model = None
    if model_path:
        from msconvert.emulator.model import load_model

        model = load_model(model_path)
    try:
        paths = export_clip(ds, clip, fmt, out, fields, model=model)
    except KeyError as exc:
        raise click.ClickException(str(exc.args[0]) if exc.args else str(exc)) from None
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    for path in paths:
        click.echo(str(path))


@main.command(context_settings=CONTEXT)
@click.argument("catalog")
@click.argument("clip")
@click.option(
    "--muscles", multiple=True, metavar="NAMES", help="Muscles to trace (comma-separated)."
)
@click.option(
    "--out", required=True, type=click.Path(dir_okay=False), help="FILE.png (or .pdf/.svg)."
)
def plot(catalog: str, clip: str, muscles: tuple[str, ...], out: str) -> None:
    """One figure of a clip: activation heatmap, chosen muscles, tracking error, vertical GRF.

    \b
    Example:
      msconvert plot catalog.zarr KIT/3/walk --muscles soleus_r,tibant_r --out walk.png
    """
    from msconvert.catalog.plot import plot_clip

    ds = _clip(catalog, clip)
    try:
        path = plot_clip(ds, clip, out, muscles=_split(muscles) or None)
    except KeyError as exc:
        raise click.ClickException(str(exc.args[0]) if exc.args else str(exc)) from None
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(str(path))


@main.command(name="export-checkpoint", context_settings=CONTEXT)
@click.argument("catalog")
@click.argument("clip")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Directory to write.")
def export_checkpoint(catalog: str, clip: str, out: str) -> None:
    """Copy the policy that produced CLIP (Orbax checkpoint, config, policy.json layout) to OUT."""
    from msconvert.emulator.learn.checkpoint import META_FILE, CheckpointError, export

    ds = _clip(catalog, clip)
    source = ds.attrs.get("checkpoint")
    if not source:
        raise click.ClickException(f"clip {clip!r} has no policy (method {ds.attrs.get('method')})")
    try:
        step = export(source, out, clip)
    except CheckpointError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{out} (step {step:,}; {META_FILE} describes the observation and action layout)")


@main.command(context_settings=CONTEXT)
@click.argument("checkpoint", type=click.Path(exists=True, file_okay=False))
@click.argument("motion_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", required=True, metavar="CATALOG", help="Catalog to write the clip into.")
@click.option("--clip-id", default=None, help="Id of the clip (default: the file name).")
@click.option("--model", "model_path", type=click.Path(exists=True, dir_okay=False), default=None)
@click.option(
    "--stochastic",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    metavar="K",
    help="Also K rollouts with sampled actions (seeds 1..K).",
)
def emulate(
    checkpoint: str,
    motion_file: Path,
    out: str,
    clip_id: str | None,
    model_path: str | None,
    stochastic: int,
) -> None:
    """Re-run a saved policy on MOTION_FILE (retargeted first) and write the emulation to CATALOG.

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
    _check_model(options)
    catalog = _create_catalog(out, resume=True, overwrite=False)
    outcome = replay_policy(source, options, checkpoint)
    with catalog:
        write_outcome(catalog, outcome)
        catalog.flush_index()
    if outcome.status != "complete":
        raise click.ClickException(f"{cid}: {outcome.reason}")
    m = outcome.metrics
    stderr.print(
        f"{cid}: joint error {m['tracking.joint_error_deg_mean']:.1f}° mean, tracked "
        f"{100 * m['tracking.fraction_tracked']:.0f}% of the clip -> {out}"
    )
