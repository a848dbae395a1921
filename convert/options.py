"""Every option of the `msconvert` command line, each declared once (tests/test_cli.py checks).

Commands take them by name (`OUT`, `MODEL`, ...) or by group (`conversion_options`,
`training_options`, `rl_options`); an option two commands share has one declaration, one
default and one help text. Cheap to import: `msconvert --help` builds every command from here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from msconvert.convert.presets import presets_help

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


def use(*options: Decorator) -> Decorator:
    """One decorator that applies these options (or groups of them), listed in `--help` order."""

    def apply(command: Callable[..., Any]) -> Callable[..., Any]:
        for option in reversed(options):
            command = option(command)
        return command

    return apply


# --- Where the output goes, and which clips or formats -----------------------------------------


def out(required: bool = True) -> Decorator:
    """--out; only `query` may leave it out (it writes to standard output then)."""
    return click.option(
        "--out",
        "out",
        required=required,
        metavar="PATH",
        help="Where to write: the catalog for amass, retarget and emulate (a local path or an "
        "fsspec URL, e.g. s3://bucket/c.zarr); the checkpoint directory for train and "
        "export-checkpoint; the file for query and plot; a file prefix or directory for export.",
    )


def check_out(out: str | None, *, file_okay: bool = True, dir_okay: bool = True) -> str | None:
    """--out checked as the command needs it (a file, or a directory), when it already exists;
    a wrong one is a usage error naming --out."""
    if out is None:
        return None
    ctx = click.get_current_context()
    param = next(p for p in ctx.command.params if p.name == "out")
    return click.Path(file_okay=file_okay, dir_okay=dir_okay).convert(out, param, ctx)


FORMATS = {
    "table": "a table on the terminal",
    "csv": "comma-separated values",
    "json": "JSON",
    "npy": "one NumPy array",
    "npz": "NumPy arrays",
    "sto": "OpenSim storage of muscle quantities",
    "mot": "OpenSim motion (joint angles in degrees)",
}


def output_format(choices: tuple[str, ...], default: str | None = None) -> Decorator:
    """--format: each command writes its own formats (FORMATS); required when no default."""
    # No default at all when required: click 8.3 takes an explicit default=None as a value.
    chosen = {"default": default, "show_default": True} if default else {"required": True}
    return click.option(
        "--format",
        "fmt",
        type=click.Choice(choices),
        help="Output format: " + "; ".join(f"{c}: {FORMATS[c]}" for c in choices) + ".",
        **chosen,
    )


CLIP_ID = click.option(
    "--clip-id",
    default=None,
    help="Id of the clip in the catalog. Default: the file name without its suffix.",
)
UNTIL = click.option(
    "--until",
    type=click.Choice(["ingest", "retarget", "train", "emulate"]),
    default=None,
    help="Stop after this stage. Default: amass runs every stage of its --method (emulate; "
    "retarget for static-opt), retarget stops after retarget.",
)
RESUME = click.option(
    "--resume",
    is_flag=True,
    help="Continue a crashed or killed run: amass redoes only the clips that are missing, "
    "failed or half-written; train continues from the last checkpoint in --out.",
)
MUSCLES = click.option(
    "--muscles",
    multiple=True,
    metavar="NAMES",
    help="Muscle labels, comma-separated or repeated, e.g. soleus_r,gasmed_r (query: keep "
    "these on the muscle dim; plot: trace these).",
)
MODEL = click.option(
    "--model",
    "model_path",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="MJCF of the musculoskeletal model; to read or replay a clip, the one it was made "
    "with. Default: MyoFullBody (416 muscles).",
)

# --- amass: the corpus ---------------------------------------------------------------------------

OVERWRITE = click.option("--overwrite", is_flag=True, help="Replace an existing catalog.")
WORKERS = click.option(
    "--workers",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Worker processes; 0 = one per CPU core for 8 clips or more, else 1.",
)
# --- amass: where the clips run (local process pool, or Ray) --------------------------------------

executor_options = use(
    click.option(
        "--executor",
        type=click.Choice(["local", "ray"]),
        default="local",
        show_default=True,
        help="Where clips run. local: a process pool on this machine (--workers). ray: one Ray "
        "task per clip on a Ray cluster; workers write their clip straight into the catalog "
        "(pip install 'msconvert[ray]').",
    ),
    click.option(
        "--ray-address",
        default=None,
        metavar="ADDR",
        help="ray: 'auto' joins the cluster running on this node (ray start), HOST:PORT the "
        "one whose head is there; unset starts a local Ray instance with --workers CPUs (0: all "
        "cores).",
    ),
    click.option(
        "--cpus-per-clip",
        type=click.IntRange(min=1),
        default=1,
        show_default=True,
        help="ray: CPUs each clip task declares (and uses: static optimization splits a clip's "
        "frames over them).",
    ),
    click.option(
        "--memory-per-clip",
        type=click.FloatRange(min=0.0, min_open=True),
        default=None,
        metavar="GB",
        help="ray: memory each clip task declares, GiB. Default: from the model and method "
        "(MyoFullBody: 2 GiB for retarget and static-opt, more for rl's replay buffer).",
    ),
    click.option(
        "--max-retries",
        type=click.IntRange(min=0),
        default=2,
        show_default=True,
        help="ray: times a clip is retried when its worker process or node dies; then it is "
        "failed with a one-line reason and the run goes on.",
    ),
)

INCLUDE = click.option(
    "--include",
    multiple=True,
    metavar="GLOB",
    help="Only clips whose id or path matches (repeatable), e.g. 'KIT/*'.",
)
EXCLUDE = click.option(
    "--exclude",
    multiple=True,
    metavar="GLOB",
    help="Skip clips whose id or path matches (repeatable).",
)
JOINT_MAP = click.option(
    "--map",
    "joint_map",
    default="auto",
    show_default=True,
    metavar="NAME|PATH",
    help="bvh: the joint map from the file's skeleton to SMPL's 22 body joints: a packaged one "
    "(cmu, lafan1), a JSON file, or auto (the first packaged map whose joints the file has).",
)
LIMIT = click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=None,
    help="Convert at most N clips (after include/exclude, in id order).",
)

# --- Converting: body model, model, rates (amass, retarget) ---------------------------------------

# One declaration for convert and plot: K solutions made, or the first K overlaid.
SOLUTIONS = click.option(
    "--solutions",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    metavar="K",
    help="track: find K distinct muscle coordinations of each clip that all track it. Solution 0 "
    "is the usual answer (least sum of activations squared); each further one weighs every "
    "muscle's activation squared by a seeded random factor (--seed) and pays for using the "
    "muscles the earlier ones used, so it shares the work out differently. Each is a full "
    "simulation (K times the time); the emulation's arrays gain a leading 'solution' dim (read "
    "one with --solution), the clip solution<j>.* and diversity.* metrics. rl: the K controller "
    "runs, then K policies per clip, policy j taught by solution j's controller and trained with "
    "seed --seed + j (K times the training; per-clip policies and --warm-start track only). "
    "static-opt: not built (K must be 1). plot: overlay the first K solutions' traced muscles.",
)
SOLUTION = click.option(
    "--solution",
    type=click.IntRange(min=0),
    default=None,
    metavar="I",
    help="Which muscle solution of a clip converted with --solutions K: 0 (the default, the "
    "usual answer) to K-1. Arrays all solutions share (the reference, the source) are read as "
    "they are.",
)

conversion_options = use(
    click.option(
        "--method",
        type=click.Choice(["rl", "static-opt", "track"]),
        default="rl",
        show_default=True,
        help="rl: learn a muscle policy per clip (train, emulate). static-opt: inverse dynamics "
        "+ static optimization per frame, the fast classic answer (no simulation). track: a "
        "muscle-driven tracking controller simulates the whole clip on the CPU (no training).",
    ),
    click.option(
        "--assist",
        type=click.Choice(["on", "off"]),
        default="on",
        show_default=True,
        help="track: apply the root assist wrench the controller needs (recorded per frame), or "
        "run with none: then a fall is recorded and the arrays after it stay NaN. rl: the "
        "policy's action ends with a root assist, taught by the controller and scaled from 1 to 0 "
        "over the first 75% of the budget; the exported policy's assist scale is in its metrics "
        "(policy.assist_scale). Models with a fixed base have no root to assist.",
    ),
    click.option(
        "--track-kp",
        type=click.FloatRange(min=0.0),
        default=100.0,
        show_default=True,
        help="track: PD stiffness on the reference's joint positions (1/s²).",
    ),
    click.option(
        "--track-kd",
        type=click.FloatRange(min=0.0),
        default=20.0,
        show_default=True,
        help="track: PD damping on the reference's velocities (1/s).",
    ),
    click.option(
        "--track-contact-lift",
        type=click.FloatRange(min=0.0, min_open=True),
        default=0.005,
        show_default=True,
        help="track: a stance point pushes on the floor only while the step's desired motion "
        "keeps it this near it (m): a point the plan lifts cannot push.",
    ),
    click.option(
        "--track-control-hz",
        type=click.FloatRange(min=0.0),
        default=200.0,
        show_default=True,
        help="track: how often the controller plans (Hz); the reference is interpolated between "
        "its frames and the catalog keeps the frame rate. 0: once per frame. At 50 Hz the legs "
        "lag the push-off and the swing toe catches the floor.",
    ),
    click.option(
        "--track-toe-push/--no-track-toe-push",
        default=False,
        show_default=True,
        help="track: let stance points on the toes push in the plan. Off by default: only the "
        "toe flexors can hold a toe push, and at toe-off they whip the free ankle into its limit.",
    ),
    SOLUTIONS,
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
    MODEL,
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
)

# --- Training a policy (amass --method rl, train) -------------------------------------------------
# The budget options default to None: PipelineOptions.train_config() takes the preset's value
# then, so each default lives in one place (convert/presets.py).

STOCHASTIC = click.option(
    "--stochastic",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    metavar="K",
    help="Also roll the policy out K times with sampled actions (seeds 1..K): "
    "stochastic_* arrays with a 'rollout' dim, tracking.stochastic_* metrics.",
)

training_options = use(
    click.option(
        "--preset",
        type=click.Choice(["demo", "cpu", "gpu"]),
        default="demo",
        show_default=True,
        help="rl: training budget and scale of each policy (the options marked 'overrides the "
        "preset' change one part of it). " + presets_help() + ".",
    ),
    click.option(
        "--agent",
        type=click.Choice(["flow", "gaussian", "ppo"]),
        default="flow",
        show_default=True,
        help="rl learner. flow: value-guided flow policy (ours). gaussian: same learner, "
        "Gaussian policy (ablation). ppo: PPO with a Gaussian policy (the standard recipe).",
    ),
    click.option(
        "--reward",
        type=click.Choice(["adversarial", "deepmimic"]),
        default="adversarial",
        show_default=True,
        help="rl tracking reward. adversarial: learned aggregation of the tracking errors "
        "(ours). deepmimic: the hand-weighted sum of exponentials (baseline).",
    ),
    click.option(
        "--warm-start",
        type=click.Choice(["track", "static-opt", "none"]),
        default="track",
        show_default=True,
        help="rl: how the policy starts. track: DAgger from the tracking controller (the policy "
        "is rolled out and taught the controller's excitations at the states it reaches). "
        "static-opt: behaviour cloning of static-optimization excitations at reference states. "
        "none: random networks.",
    ),
    click.option("--no-warm-start", "warm_start", flag_value="none", hidden=True),
    click.option(
        "--residual/--no-residual",
        default=True,
        show_default=True,
        help="rl with --warm-start track: the policy's action is added to the tracking "
        "controller's run over the clip (a residual policy: it learns the feedback the "
        "controller gives off its own run, and a policy that adds nothing replays the "
        "controller). --no-residual: the policy's action is the whole action.",
    ),
    click.option(
        "--seed",
        type=int,
        default=0,
        show_default=True,
        help="rl: training seed. track --solutions: seeds the muscle weights of solutions 1..K-1.",
    ),
    click.option(
        "--budget-steps",
        type=click.IntRange(min=1),
        default=None,
        help="rl: env steps per policy, summed over environments (overrides the preset).",
    ),
    click.option(
        "--budget-minutes",
        type=click.FloatRange(min=0.0, min_open=True),
        default=None,
        help="rl: wall minutes per policy; training stops at whichever budget comes first "
        "(overrides the preset).",
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
        help="rl: simulation backend for training; auto: MJX on an accelerator, else MuJoCo's "
        "C engine (overrides the preset).",
    ),
    click.option(
        "--evaluations",
        type=click.IntRange(min=0),
        default=None,
        help="rl: emulate the clips with this many snapshots spread over the budget (and the "
        "starting policy) and export the one that tracks best; 0 exports the last snapshot "
        "(overrides the preset).",
    ),
    click.option(
        "--compile-cache",
        type=click.Path(file_okay=False),
        default=None,
        metavar="DIR",
        envvar="MSCONVERT_COMPILE_CACHE",
        show_envvar=True,
        help="rl: JAX's persistent compilation cache: the compiled training code is kept here and "
        "reused by every later run with the same model and settings (a resumed run, the next "
        "clip, another worker, another catalog when they share one folder). Default: jax_cache "
        "in the catalog's checkpoint folder (CATALOG.checkpoints), else ~/.cache/msconvert/jax.",
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
)

rl_options = use(
    training_options,
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
        help="rl: where policies are saved (a folder or an fsspec URL). Default: "
        "CATALOG.checkpoints beside the catalog, on the same store.",
    ),
    STOCHASTIC,
    click.option(
        "--finetune-steps",
        type=click.IntRange(min=0),
        default=0,
        show_default=True,
        metavar="N",
        help="rl, --policy multi-clip: fine-tune a copy of the shared policy on each clip for N "
        "env steps before emulating it (0: emulate with the shared policy).",
    ),
)

# --- Reading a catalog (ls, query, plot) --------------------------------------------------------

# The headline metrics of `ls`: the clip, how well the model follows it, how it was made.
LS_COLUMNS = (
    "source.duration_s",
    "retarget.position_error_mm",
    "static_opt.residual_pct",
    "emulate.tracking_error_mm",
    "emulate.fall_pct",
)

STATUS = click.option(
    "--status",
    type=click.Choice(["complete", "failed"]),
    default=None,
    help="Only clips with this status.",
)
SOURCE_FORMAT = click.option(
    "--source-format",
    default=None,
    metavar="FORMAT",
    help="Only clips read from this format: smplh, smplx, bvh (any joint map) or bvh:MAP "
    "(e.g. bvh:cmu).",
)
COLUMNS = click.option(
    "--columns",
    default=",".join(LS_COLUMNS),
    show_default=True,
    help="Metrics shown in the table, comma-separated ('all' for every one). "
    "csv and json always carry every metric.",
)
FIELD = click.option(
    "--field",
    "field_name",
    required=True,
    help="Array to read, e.g. source_joints ((time, joint, xyz) world joint positions, m).",
)
FIELDS = click.option(
    "--fields", default=None, help="Comma-separated arrays (default: per format)."
)
JOINTS = click.option(
    "--joints",
    multiple=True,
    metavar="NAMES",
    help="Joint labels to keep (comma-separated or repeated), e.g. left_knee,right_knee.",
)
SEL = click.option(
    "--sel",
    "selections",
    multiple=True,
    metavar="DIM=LABELS",
    help="Keep these labels of any dim (repeatable), e.g. --sel foot=left --sel xyz=z.",
)
START = click.option("--start", type=float, default=None, help="Start time in seconds (inclusive).")
END = click.option("--end", type=float, default=None, help="End time in seconds (inclusive).")

# --- demo-corpus ------------------------------------------------------------------------------

BROKEN = click.option(
    "--broken",
    is_flag=True,
    help="Also write a set of deliberately broken files (for testing error handling).",
)
STRESS = click.option(
    "--stress",
    is_flag=True,
    help="Also write the retargeting stress clips under Stress/ (run with flight phases, jump, "
    "450° turn, cartwheel, a 150-s walk, 30 and 250 fps); not part of the default demo.",
)
