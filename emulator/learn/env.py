"""The imitation task (docs/method.md#environment): one environment over a simulation backend.

    env = make_env(model, make_reference_set(references, model, body_names), EnvConfig())
    state = env.reset(key)                      # reference state initialization
    state, info = env.step(state, action)       # a ∈ [-1, 1]^M → excitation 0.5 + 0.5·a
                                                # (+ 6 root-assist components with `assist`)

    envs = training_env(env, n_envs)            # AutoReset(VecEnv(env, n_envs))
    state = envs.reset(key)
    state, info = envs.step(state, actions)     # finished environments start again

An environment carries its clip index and frame; clips of different lengths are padded to the
longest and masked by their length. A step runs `frame_skip` physics steps (the control rate) on
the backend, then computes the observation of the new state, the tracking-error vector Δ against
the next reference frame (what the rewards use), termination (`terminated`: key bodies or root
too far off, or a diverged simulation: terminal, never an exception) and truncation (clip end or
episode limit). `Env.step` never resets; `AutoReset` restarts finished environments at a new
random clip and frame, and `info.next_obs` is the observation before that reset.

The physics comes only from the backend (`emulator/backends`). On MJX `Env.reset_at` and
`Env.step` are pure JAX functions of one environment and `VecEnv` vmaps them: a training step
jits and scans whole. MuJoCo's C engine is not JAX: its state is float64 host arrays, `Env.step`
runs it as a batch of one, and `VecEnv` steps all environments in one threaded `rollout` call;
what follows the physics (`Env.advance`) is the same jitted function, vmapped.
Observations are raw here: the trainer normalizes them.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import mujoco
import numpy as np

from msconvert.emulator.backends import Backend, View, make_backend
from msconvert.emulator.learn import compiling
from msconvert.emulator.model import control_frame_skip, model_sha256
from msconvert.emulator.muscles.static_opt import root_chain
from msconvert.emulator.retarget.reference import Reference

_FREE = int(mujoco.mjtJoint.mjJNT_FREE)
_ONE_DOF = (int(mujoco.mjtJoint.mjJNT_HINGE), int(mujoco.mjtJoint.mjJNT_SLIDE))
_HINGE = int(mujoco.mjtJoint.mjJNT_HINGE)


@dataclass(frozen=True)
class EnvConfig:
    """The task's settings (docs/method.md#environment)."""

    control_hz: float = 50.0
    future_steps: tuple[int, ...] = (1, 2, 4, 8)
    termination_body_error_m: float = 0.3
    termination_root_error_m: float = 0.5
    effort_weight: float = 1e-3
    initial_activation: float = 0.05  # where no static-optimization activation is given
    episode_steps: int = 500  # truncation after this many control steps
    # Reset frames drawn so every frame is visited about equally often (see `sample_reset`); False:
    # uniform over the clip, which starves the first frames, where every emulation starts.
    even_visitation: bool = True
    sample_by_failure: bool = False  # clip sampling weighted by recent termination rate
    failure_weight: float = 4.0  # p(clip) ∝ 1 + failure_weight · failure rate
    failure_momentum: float = 0.99
    # The action ends with a root assist (residual force control, Yuan & Kitani 2020): six more
    # components a in [-1, 1], generalized forces a³ × assist_limit_bw × body weight on the
    # root's six DoFs (N, and N m per metre for the rotations). The cube gives a fitted policy's
    # small errors around zero a thousandth of their size in force. The trainer scales
    # them down to zero over training (`TrainConfig.assist_anneal`); the reward is discounted by
    # exp(−assist_weight · (force applied in body weights + moment in W·m)).
    assist: bool = False
    assist_limit_bw: float = 1.0
    assist_weight: float = 1.0

    def __post_init__(self) -> None:
        if not (self.assist_limit_bw > 0 and self.assist_weight >= 0):
            raise ValueError("assist_limit_bw must be > 0 and assist_weight >= 0")


class ReferenceSet(NamedTuple):
    """Multi-clip references at the control rate, padded to the longest clip (repeat last)."""

    qpos: np.ndarray  # (C, T, nq)
    qvel: np.ndarray  # (C, T, nv)
    body_pos: np.ndarray  # (C, T, B, 3)
    activation: np.ndarray  # (C, T, na) initial activations at reset
    length: np.ndarray  # (C,) frames of each clip
    clip_ids: tuple[str, ...]
    body_names: tuple[str, ...]
    # (C, T, act_dim): the action the policy's is added to at each frame (a residual policy:
    # the tracking controller's run, `dagger.controller_run`); None: none.
    feedforward: np.ndarray | None = None
    # (C, T, nq), (C, T, nv): the states resets start in (a residual policy: the controller
    # run's, which its feedforward belongs to); None: the reference's own qpos and qvel.
    start_qpos: np.ndarray | None = None
    start_qvel: np.ndarray | None = None


def make_reference_set(
    references: Sequence[Reference],
    model: mujoco.MjModel,
    body_names: Sequence[str],
    activations: Sequence[np.ndarray] | None = None,
    initial_activation: float = 0.05,
) -> ReferenceSet:
    """Stack references into a padded set; `activations` (T_c, na) per clip seed the activation
    at reset."""
    if not references:
        raise ValueError("no references")
    body_names = tuple(body_names)
    for b in body_names:
        if mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, b) < 0:
            raise ValueError(f"key body {b!r} is not in the model")
    qs, vs, bs, acts, ids = [], [], [], [], []
    for c, ref in enumerate(references):
        clip = str(ref.clip_id)
        q = np.asarray(ref.qpos, np.float64)
        v = np.asarray(ref.qvel, np.float64)
        b = np.asarray(ref.body_pos, np.float64)
        names = tuple(ref.body_names)
        if q.ndim != 2 or q.shape[1] != model.nq:
            raise ValueError(f"{clip}: qpos has shape {q.shape}, the model needs (T, {model.nq})")
        if v.shape != (q.shape[0], model.nv):
            raise ValueError(
                f"{clip}: qvel has shape {v.shape}, expected ({q.shape[0]}, {model.nv})"
            )
        if q.shape[0] < 2:
            raise ValueError(f"{clip}: a reference needs at least 2 frames, got {q.shape[0]}")
        if names != body_names:
            order = [names.index(n) for n in body_names if n in names]
            if len(order) != len(body_names):
                raise ValueError(
                    f"{clip}: reference lacks key bodies {set(body_names) - set(names)}"
                )
            b = b[:, order]
        if b.shape != (q.shape[0], len(body_names), 3):
            raise ValueError(f"{clip}: body_pos has shape {b.shape}")
        for name, arr in (("qpos", q), ("qvel", v), ("body_pos", b)):
            if not np.isfinite(arr).all():
                raise ValueError(f"{clip}: reference {name} has non-finite values")
        if activations is not None and activations[c] is not None:
            a = np.clip(np.asarray(activations[c], np.float64), 0.0, 1.0)
            if a.shape != (q.shape[0], model.na):
                raise ValueError(
                    f"{clip}: activations {a.shape}, expected ({q.shape[0]}, {model.na})"
                )
        else:
            a = np.full((q.shape[0], model.na), initial_activation)
        qs.append(q), vs.append(v), bs.append(b), acts.append(a), ids.append(clip)
    length = np.array([len(q) for q in qs])
    t_max = int(length.max())

    def pad(arrs: list[np.ndarray]) -> np.ndarray:
        return np.stack([np.concatenate([a, np.repeat(a[-1:], t_max - len(a), 0)]) for a in arrs])

    return ReferenceSet(pad(qs), pad(vs), pad(bs), pad(acts), length, tuple(ids), body_names)


class EnvState(NamedTuple):
    """One environment's state; a batch (VecEnv) has a leading env axis on every field."""

    sim: Any  # the backend's state: mjx.Data on MJX, float64 host arrays on the C engine
    view: View  # what the task reads of it (float32)
    clip: jax.Array  # int
    frame: jax.Array  # int: the reference frame the state corresponds to
    steps: jax.Array  # control steps since reset
    obs: jax.Array  # (obs_dim,) raw observation


class AutoResetState(NamedTuple):
    """A batch of environments (EnvState's fields, each with a leading env axis) and what
    AutoReset draws their new starts with."""

    sim: Any
    view: View
    clip: jax.Array  # (n,)
    frame: jax.Array
    steps: jax.Array
    obs: jax.Array  # (n, obs_dim)
    key: jax.Array
    failure: jax.Array  # (C,) recent termination rate per clip

    @property
    def envs(self) -> EnvState:
        return EnvState(*self[: len(EnvState._fields)])


class StepInfo(NamedTuple):
    """What one step reports (per environment; with a leading env axis from VecEnv)."""

    next_obs: jax.Array  # (obs_dim,) raw observation of s' before any reset
    terminated: jax.Array
    truncated: jax.Array
    error: jax.Array  # (E,) tracking-error vector Δ (raw)
    joint_error_rad: jax.Array  # mean |joint-angle error| over non-root DoFs
    body_error_m: jax.Array  # mean key-body position error
    root_error_m: jax.Array
    effort: jax.Array  # mean u²
    pose_sq: jax.Array  # DeepMimic's Σ joint error² (+ root orientation)
    velocity_sq: jax.Array
    body_sq: jax.Array
    com_sq: jax.Array  # root position error² (the centre-of-mass term's stand-in)
    diverged: jax.Array
    clip: jax.Array
    frame: jax.Array
    recording: Any = None  # the backend's Recording of the step where it records, else None
    assist_force_bw: Any = 0.0  # root assist force applied, in body weights (0 without assist)
    assist_moment_bwm: Any = 0.0  # root assist moment applied, in body weight × metre


@dataclass(frozen=True)
class Layout:
    """Index arrays of the model (static)."""

    free_root: bool
    joint_qpos: np.ndarray  # qpos columns of non-root hinge/slide joints
    joint_qvel: np.ndarray
    joint_is_hinge: np.ndarray
    body_ids: np.ndarray
    length_lo: np.ndarray
    length_span: np.ndarray
    force_max: np.ndarray
    muscle_names: tuple[str, ...]
    root_dofs: np.ndarray  # the root's six DoFs (free joint or 3 slides + 3 hinges), or empty
    body_weight: float  # N


def model_layout(model: mujoco.MjModel, body_names: Sequence[str]) -> Layout:
    free = model.njnt > 0 and int(model.jnt_type[0]) == _FREE
    one = [j for j in range(model.njnt) if int(model.jnt_type[j]) in _ONE_DOF]
    lr = model.actuator_lengthrange.copy()
    span = np.maximum(lr[:, 1] - lr[:, 0], 1e-3)
    fmax = np.where(
        model.actuator_dyntype == int(mujoco.mjtDyn.mjDYN_MUSCLE),
        np.abs(model.actuator_gainprm[:, 2]),
        np.abs(model.actuator_gear[:, 0]),
    )
    return Layout(
        free_root=bool(free),
        joint_qpos=np.array([model.jnt_qposadr[j] for j in one], np.int32),
        joint_qvel=np.array([model.jnt_dofadr[j] for j in one], np.int32),
        joint_is_hinge=np.array([int(model.jnt_type[j]) == _HINGE for j in one]),
        body_ids=np.array(
            [mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, b) for b in body_names], np.int32
        ),
        length_lo=lr[:, 0],
        length_span=span,
        force_max=np.maximum(fmax, 1.0),
        muscle_names=tuple(model.actuator(i).name for i in range(model.nu)),
        root_dofs=root_chain(model)[0].astype(np.int32),
        body_weight=float(model.body_subtreemass[0]) * float(np.linalg.norm(model.opt.gravity)),
    )


# --- rotations (w, x, y, z) ------------------------------------------------------------


def quat_to_mat(q: jax.Array) -> jax.Array:
    q = q / jnp.linalg.norm(q, axis=-1, keepdims=True)
    w, x, y, z = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
    return jnp.stack(
        [
            jnp.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
            jnp.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
            jnp.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1),
        ],
        -2,
    )


def quat_error(q: jax.Array, q_ref: jax.Array) -> jax.Array:
    """Rotation (≈ rotation vector for small errors) taking q to q_ref, in q's frame."""
    w1, v1 = q[..., :1], -q[..., 1:]  # conjugate of q
    w2, v2 = q_ref[..., :1], q_ref[..., 1:]
    w = w1 * w2 - (v1 * v2).sum(-1, keepdims=True)
    v = w1 * v2 + w2 * v1 + jnp.cross(v1, v2)
    return 2.0 * jnp.sign(w + 1e-12) * v


def _wrap(x: jax.Array) -> jax.Array:
    return (x + jnp.pi) % (2 * jnp.pi) - jnp.pi


# --- the task's pure functions ------------------------------------------------------------


class Task(NamedTuple):
    """Static arrays the pure functions read (device copies of Layout and ReferenceSet)."""

    qpos: jax.Array
    qvel: jax.Array
    body_pos: jax.Array
    activation: jax.Array
    length: jax.Array
    joint_qpos: jax.Array
    joint_qvel: jax.Array
    joint_is_hinge: jax.Array
    length_lo: jax.Array
    length_span: jax.Array
    force_max: jax.Array
    feedforward: jax.Array  # (C, T, act_dim), or (C, 1, act_dim) zeros without a feedforward
    start_qpos: jax.Array  # (C, T, nq): where resets start (the reference's qpos by default)
    start_qvel: jax.Array
    # On a pure backend (MJX), what a reset at (clip, frame) sees beyond qpos, qvel and act:
    # (C, T, ...) tables computed once by the C engine, so that no reset in a compiled graph
    # runs kinematics (`start_view`). None on a host backend, whose resets run the C engine.
    start_length: jax.Array | None = None
    start_velocity: jax.Array | None = None
    start_force: jax.Array | None = None
    start_body_pos: jax.Array | None = None


START_TABLES = ("start_length", "start_velocity", "start_force", "start_body_pos")


def start_view_table(
    model: mujoco.MjModel,
    body_ids: np.ndarray,
    qpos: np.ndarray,
    qvel: np.ndarray,
    act: np.ndarray,
    length: np.ndarray,
    frames: int,
) -> dict[str, jax.Array]:
    """The `Task.start_*` tables of start states (C, T, ...): per clip and frame below its
    length, the actuators' length, velocity and force and the bodies' positions with no control,
    by the C engine in float64; padded to `frames` as the references are."""
    data = mujoco.MjData(model)
    n_clips, nu = qpos.shape[0], model.nu
    out = {
        "start_length": np.zeros((n_clips, qpos.shape[1], nu)),
        "start_velocity": np.zeros((n_clips, qpos.shape[1], nu)),
        "start_force": np.zeros((n_clips, qpos.shape[1], nu)),
        "start_body_pos": np.zeros((n_clips, qpos.shape[1], len(body_ids), 3)),
    }
    for c in range(n_clips):
        for t in range(int(length[c])):
            data.qpos[:], data.qvel[:], data.act[:] = qpos[c, t], qvel[c, t], act[c, t]
            data.ctrl[:] = 0.0
            # The stages a View reads; no acceleration or constraint solve.
            mujoco.mj_fwdPosition(model, data)
            mujoco.mj_fwdVelocity(model, data)
            mujoco.mj_fwdActuation(model, data)
            out["start_length"][c, t] = data.actuator_length
            out["start_velocity"][c, t] = data.actuator_velocity
            out["start_force"][c, t] = data.actuator_force
            out["start_body_pos"][c, t] = data.xpos[body_ids]
        for table in out.values():  # past the clip's end: its last frame, as _pad_frames does
            table[c, int(length[c]) :] = table[c, max(int(length[c]) - 1, 0)]
    return {name: _pad_frames(table, frames) for name, table in out.items()}


def start_view(task: Task, qpos, qvel, act, clip, frame) -> View:
    """The View of a reset at (clip, frame) from the task's tables (a pure backend's)."""
    dtype = jnp.asarray(qpos).dtype
    pick = lambda table: table[clip, frame].astype(dtype)  # noqa: E731
    return View(
        qpos,
        qvel,
        act,
        pick(task.start_length),
        pick(task.start_velocity),
        pick(task.start_force),
        pick(task.start_body_pos),
    )


def applied_action(task: Task, clip, frame, action) -> jax.Array:
    """The action the environment gets for a policy's: with a feedforward (a residual policy),
    the feedforward's action at (clip, frame) plus the policy's, within [-1, 1]."""
    feedforward = task.feedforward[clip, jnp.minimum(frame, task.feedforward.shape[1] - 1)]
    return jnp.clip(jnp.asarray(action) + feedforward, -1.0, 1.0)


def _root(layout: Layout, view: View) -> tuple[jax.Array, jax.Array]:
    """Root position (3,) and rotation matrix (3, 3); world origin for a fixed base."""
    if layout.free_root:
        return view.qpos[:3], quat_to_mat(view.qpos[3:7])
    return jnp.zeros(3), jnp.eye(3)


def _joint_diff(task: Task, q_ref: jax.Array, q: jax.Array) -> jax.Array:
    d = q_ref[task.joint_qpos] - q[task.joint_qpos]
    return jnp.where(task.joint_is_hinge, _wrap(d), d)


def observe(task: Task, layout: Layout, config: EnvConfig, view: View, clip, frame) -> jax.Array:
    """Raw observation (docs/method.md#observation) of one state at frame `frame` of its clip."""
    pos, rot = _root(layout, view)
    rot_t = jnp.swapaxes(rot, -1, -2)
    local = lambda p: jnp.einsum("ij,bj->bi", rot_t, p - pos[None, :])  # noqa: E731
    parts = [
        view.qpos[2:] if layout.free_root else view.qpos,
        view.qvel,
        local(view.body_pos).reshape(-1),
        view.act,
        (view.length - task.length_lo) / task.length_span,
        view.velocity / task.length_span,
        view.force / task.force_max,
    ]
    if layout.free_root:
        parts.append(jnp.einsum("ij,j->i", rot_t, jnp.array([0.0, 0.0, -1.0])))
    last = task.length[clip] - 1
    for k in config.future_steps:
        f = jnp.minimum(frame + k, last)
        q_ref = task.qpos[clip, f]
        parts.append(_joint_diff(task, q_ref, view.qpos))
        parts.append(local(task.body_pos[clip, f]).reshape(-1))
        if layout.free_root:
            parts.append(jnp.einsum("ij,j->i", rot_t, q_ref[:3] - pos))
            parts.append(quat_error(view.qpos[3:7], q_ref[3:7]))
    parts.append(jnp.reshape(frame / jnp.maximum(last, 1), (1,)).astype(view.qpos.dtype))
    return jnp.concatenate([jnp.asarray(p, jnp.float32) for p in parts])


def tracking(task: Task, layout: Layout, view: View, clip, frame) -> dict[str, jax.Array]:
    """Δ and the scalar errors of one state against reference frame `frame` of its clip."""
    q_ref, v_ref = task.qpos[clip, frame], task.qvel[clip, frame]
    b_ref = task.body_pos[clip, frame]
    pos, rot = _root(layout, view)
    rot_t = jnp.swapaxes(rot, -1, -2)
    joint = _joint_diff(task, q_ref, view.qpos)
    vel = v_ref[task.joint_qvel] - view.qvel[task.joint_qvel]
    body_world = b_ref - view.body_pos
    body_local = jnp.einsum("ij,bj->bi", rot_t, body_world)
    parts = [joint, vel, body_local.reshape(-1)]
    root_err = jnp.zeros(())
    rot_sq = jnp.zeros(())
    if layout.free_root:
        root_vec = q_ref[:3] - pos
        rot_err = quat_error(view.qpos[3:7], q_ref[3:7])
        parts += [root_vec, rot_err, v_ref[:6] - view.qvel[:6]]
        root_err = jnp.linalg.norm(root_vec)
        rot_sq = (rot_err**2).sum()
    body_dist = jnp.linalg.norm(body_world, axis=-1)
    return {
        "error": jnp.concatenate(parts),
        "joint_error_rad": jnp.abs(joint).mean() if joint.shape[0] else jnp.zeros(()),
        "body_error_m": body_dist.mean(),
        "root_error_m": root_err,
        "pose_sq": (joint**2).sum() + rot_sq,
        "velocity_sq": (vel**2).sum(),
        "body_sq": (body_dist**2).sum(),
        "com_sq": root_err**2,
    }


def terminated(config: EnvConfig, track: dict[str, jax.Array], diverged) -> jax.Array:
    """The termination test (docs/method.md#termination-and-truncation): a diverged simulation,
    a non-finite Δ, or the key bodies or the root too far off the reference."""
    return (
        diverged
        | ~jnp.isfinite(track["error"]).all(axis=-1)
        | (track["body_error_m"] > config.termination_body_error_m)
        | (track["root_error_m"] > config.termination_root_error_m)
    )


def excitation(action):
    """Muscle excitations u = 0.5 + 0.5·clip(a, -1, 1) of actions (NumPy or JAX, as given)."""
    xp = np if isinstance(action, np.ndarray) else jnp
    return 0.5 + 0.5 * xp.clip(action, -1.0, 1.0)


def _controls(action, env: Env) -> tuple[Any, Any, Any, Any]:
    """Excitations (n, nu), the root's applied generalized forces (n, nv; None without an assist
    in the action), the action with non-finite entries zeroed, and the rows that had any."""
    xp = np if isinstance(action, np.ndarray) else jnp
    if action.shape[-1] != env.act_dim:
        raise ValueError(
            f"actions have {action.shape[-1]} components, the task takes {env.act_dim}"
        )
    finite = xp.isfinite(action)
    action = xp.where(finite, action, 0.0)
    nu, qfrc = env.model.nu, None
    if env.config.assist:  # generalized forces on the root's six DoFs
        wrench = env.layout.body_weight * _assist_bw(action, nu, env.config.assist_limit_bw)
        if xp is np:
            qfrc = np.zeros(action.shape[:-1] + (env.model.nv,))
            qfrc[..., env.layout.root_dofs] = wrench
        else:
            qfrc = jnp.zeros(action.shape[:-1] + (env.model.nv,), action.dtype)
            qfrc = qfrc.at[..., env.layout.root_dofs].set(wrench.astype(action.dtype))
    return excitation(action[..., :nu]), qfrc, action, ~finite.all(axis=-1)


def assist_in_bw(action, nu: int, limit_bw: float) -> tuple[Any, Any]:
    """The root assist an action applies: the force in body weights and the moment in body
    weight × metre (norms of the translational and rotational DoFs' parts); zeros without one."""
    xp = np if isinstance(action, np.ndarray) else jnp
    if action.shape[-1] <= nu:
        zero = xp.zeros(action.shape[:-1], action.dtype)
        return zero, zero
    a = _assist_bw(action, nu, limit_bw)
    return xp.linalg.norm(a[..., :3], axis=-1), xp.linalg.norm(a[..., 3:], axis=-1)


def _assist_bw(action, nu: int, limit_bw: float):
    """The six root-assist components of actions as generalized forces in body weights (and
    body weight × metre): limit_bw · clip(b, -1, 1)³."""
    xp = np if isinstance(action, np.ndarray) else jnp
    return limit_bw * xp.clip(action[..., nu : nu + 6], -1.0, 1.0) ** 3


def sample_reset(
    task: Task, config: EnvConfig, key, failure, n: int
) -> tuple[jax.Array, jax.Array]:
    """Clips (uniform, or weighted by failure) and reset frames within them (never the last).

    Uniform reset frames visit frame f only from episodes that start in the H frames before it
    (H = episode_steps), so the first frames of a clip, where every emulation starts and where
    errors compound over the whole rollout, are seen up to H times less often than the rest.
    With `even_visitation` (*ours*) the start is a virtual frame drawn uniformly from
    [-(H - 1), T - 2] and clamped to 0: every frame f >= H - 1 is then covered by H equally likely
    starts, and frames before that by at least as many (the clamped ones run from frame 0).
    """
    k1, k2 = jax.random.split(key)
    weights = jnp.ones_like(failure)
    if config.sample_by_failure:
        weights = weights + config.failure_weight * failure
    clip = jax.random.categorical(k1, jnp.log(weights), shape=(n,))
    last = task.length[clip] - 1  # frames 0 .. last - 1 can start an episode
    lead = config.episode_steps - 1 if config.even_visitation else 0
    u = jax.random.uniform(k2, (n,))
    frame = jnp.floor(u * (last + lead)).astype(jnp.int32) - lead
    return clip, jnp.clip(frame, 0, jnp.maximum(last - 1, 0))


def _update_failure(config: EnvConfig, failure, clip, terminated, done):
    ends = jnp.zeros_like(failure).at[clip].add(done.astype(failure.dtype))
    falls = jnp.zeros_like(failure).at[clip].add(terminated.astype(failure.dtype))
    m = config.failure_momentum
    rate = falls / jnp.maximum(ends, 1.0)
    return jnp.where(ends > 0, m * failure + (1 - m) * rate, failure)


# --- the environment and its wrappers ---------------------------------------------------


class Env:
    """The imitation task for one environment, its physics from a backend: Brax's `reset(key)`
    and `step(state, action)`, pure JAX functions on a pure backend (MJX)."""

    def __init__(
        self, model: mujoco.MjModel, refs: ReferenceSet, config: EnvConfig, physics: Backend
    ):
        if refs.qpos.shape[-1] != model.nq or refs.activation.shape[-1] != model.na:
            raise ValueError("the reference set was made for another model")
        if physics.frame_skip != control_frame_skip(model, config.control_hz):
            raise ValueError("the backend's frame_skip does not give the control rate")
        self.model, self.refs, self.config = model, refs, config
        self.layout = model_layout(model, refs.body_names)
        self.frame_skip = physics.frame_skip
        if config.assist and self.layout.root_dofs.size != 6:
            raise ValueError(
                "a root assist needs a 6-DoF root (free joint, or 3 slides + 3 hinges): "
                "this model has none"
            )
        # The action: one excitation per muscle, then the root assist's six components.
        self.act_dim = model.nu + (6 if config.assist else 0)
        self.assist_limit = np.full(6, config.assist_limit_bw * self.layout.body_weight)
        self.muscle_names = self.layout.muscle_names
        self.clip_ids = refs.clip_ids
        lay = self.layout
        frames = frame_bucket(refs.qpos.shape[1])
        self.task = Task(
            qpos=_pad_frames(refs.qpos, frames),
            qvel=_pad_frames(refs.qvel, frames),
            body_pos=_pad_frames(refs.body_pos, frames),
            activation=_pad_frames(refs.activation, frames),
            length=jnp.asarray(refs.length, jnp.int32),
            joint_qpos=jnp.asarray(lay.joint_qpos),
            joint_qvel=jnp.asarray(lay.joint_qvel),
            joint_is_hinge=jnp.asarray(lay.joint_is_hinge),
            length_lo=jnp.asarray(lay.length_lo, jnp.float32),
            length_span=jnp.asarray(lay.length_span, jnp.float32),
            force_max=jnp.asarray(lay.force_max, jnp.float32),
            feedforward=self._feedforward(refs, frames),
            start_qpos=_pad_frames(_given(refs.start_qpos, refs.qpos, "start_qpos"), frames),
            start_qvel=_pad_frames(_given(refs.start_qvel, refs.qvel, "start_qvel"), frames),
        )
        self._set_physics(physics)
        self._model_key = (model_sha256(model), refs.body_names, config)
        # The task is an argument of every compiled function, never a constant in its graph: the
        # functions are compiled once per model and settings (`signature`), for every clip, and
        # shared by every Env of that signature in the process (`with_physics` copies too).
        self._start, self._advance, self._track = compiling.shared(
            ("env", self._model_key),
            lambda: (
                jax.jit(self.start),
                jax.jit(self.advance),
                jax.jit(lambda view, clip, frame, task: tracking(task, lay, view, clip, frame)),
            ),
        )
        m, f32 = model, jnp.float32
        probe = View(
            *(jax.ShapeDtypeStruct((k,), f32) for k in (m.nq, m.nv, m.na, m.nu, m.nu, m.nu)),
            jax.ShapeDtypeStruct((len(refs.body_names), 3), f32),
        )
        self.obs_dim = int(
            jax.eval_shape(lambda v: observe(self.task, lay, config, v, 0, 0), probe).shape[0]
        )
        self.error_dim = int(
            jax.eval_shape(lambda v: tracking(self.task, lay, v, 0, 0)["error"], probe).shape[0]
        )

    def _feedforward(self, refs: ReferenceSet, frames: int) -> jax.Array:
        n_clips = len(refs.length)
        if refs.feedforward is None:
            return jnp.zeros((n_clips, 1, self.act_dim), jnp.float32)
        ff = np.asarray(refs.feedforward, np.float32)
        if ff.shape != (n_clips, refs.qpos.shape[1], self.act_dim):
            raise ValueError(
                f"feedforward has shape {ff.shape}, the task needs "
                f"({n_clips}, {refs.qpos.shape[1]}, {self.act_dim})"
            )
        if not np.isfinite(ff).all() or np.abs(ff).max() > 1.0:
            raise ValueError("feedforward actions must be finite and within [-1, 1]")
        return _pad_frames(ff, frames)

    @property
    def signature(self) -> tuple:
        """What this environment's compiled functions depend on: the model (its hash), key
        bodies, settings and physics; never the clips."""
        p = self.physics
        physics = (p.kind, getattr(p, "impl", None), p.record, p.record_physics_steps)
        return (*self._model_key, physics)

    def _set_physics(self, physics: Backend) -> None:
        if not physics.pure and physics.n_envs != 1:
            raise ValueError(f"one environment needs a backend of 1 env, got {physics.n_envs}")
        self.physics, self.backend = physics, physics.kind
        if not physics.pure:  # a host backend computes each reset's View itself
            self.task = self.task._replace(**dict.fromkeys(START_TABLES))
        elif self.task.start_length is None:
            refs = self.refs
            self.task = self.task._replace(
                **start_view_table(
                    self.model,
                    self.layout.body_ids,
                    _given(refs.start_qpos, refs.qpos, "start_qpos"),
                    _given(refs.start_qvel, refs.qvel, "start_qvel"),
                    refs.activation,
                    refs.length,
                    self.task.qpos.shape[1],
                )
            )

    def with_physics(self, physics: Backend) -> Env:
        """This task on another backend (of the same model and frame_skip); the compiled task
        functions are shared."""
        if physics.frame_skip != self.frame_skip:
            raise ValueError("the backend's frame_skip does not give the control rate")
        env = copy.copy(self)
        env._set_physics(physics)
        return env

    @property
    def unwrapped(self) -> Env:
        return self

    def track(self, view: View, clip, frame) -> dict[str, jax.Array]:
        """Δ and the scalar errors of one state against frame `frame` of clip `clip`."""
        return self._track(view, clip, frame, self.task)

    def start_state(
        self, clip, frame, task: Task | None = None
    ) -> tuple[jax.Array, jax.Array, jax.Array]:
        """qpos, qvel and activation that resets at reference frames start in (any shape of clip
        and frame): the reference's, or the residual's controller run's."""
        t = self.task if task is None else task
        return t.start_qpos[clip, frame], t.start_qvel[clip, frame], t.activation[clip, frame]

    # -- the task: pure, no physics ---------------------------------------------------------

    # Every function below reads the references from `task` (default: this Env's own): traced
    # inside a compiled function, they are its argument, so one compile serves every clip.

    def start(self, view: View, clip, frame, task: Task | None = None) -> EnvState:
        """The task part of a reset: the state at (clip, frame) that looks like `view`; its
        `sim` is None (the caller's)."""
        task = self.task if task is None else task
        clip, frame = jnp.asarray(clip, jnp.int32), jnp.asarray(frame, jnp.int32)
        obs = observe(task, self.layout, self.config, view, clip, frame)
        return EnvState(None, view, clip, frame, jnp.zeros((), jnp.int32), obs)

    def advance(
        self, state: EnvState, view: View, diverged, action, task: Task | None = None
    ) -> tuple[EnvState, StepInfo]:
        """The task part of a step from `state`, whose physics now looks like `view`: Δ,
        termination, truncation and the observation; `sim` is passed through unchanged.
        action: the action applied, non-finite entries zeroed (for the effort)."""
        task = self.task if task is None else task
        cfg = self.config
        frame = state.frame + 1
        track = tracking(task, self.layout, view, state.clip, frame)
        finite = jnp.isfinite(track["error"]).all()
        term = terminated(cfg, track, diverged)
        steps = state.steps + 1
        truncated = ~term & ((frame >= task.length[state.clip] - 1) | (steps >= cfg.episode_steps))
        obs = observe(task, self.layout, cfg, view, state.clip, frame)
        action = jnp.asarray(action, jnp.float32)
        u = excitation(action[..., : self.model.nu])
        assist_force, assist_moment = assist_in_bw(action, self.model.nu, cfg.assist_limit_bw)
        info = StepInfo(
            next_obs=obs,
            terminated=term,
            truncated=truncated,
            error=jnp.where(finite, track["error"], 0.0),
            joint_error_rad=jnp.nan_to_num(track["joint_error_rad"], nan=jnp.pi),
            body_error_m=jnp.nan_to_num(track["body_error_m"], nan=10.0),
            root_error_m=jnp.nan_to_num(track["root_error_m"], nan=10.0),
            effort=(u**2).mean(),
            pose_sq=jnp.nan_to_num(track["pose_sq"], nan=1e6),
            velocity_sq=jnp.nan_to_num(track["velocity_sq"], nan=1e6),
            body_sq=jnp.nan_to_num(track["body_sq"], nan=1e6),
            com_sq=jnp.nan_to_num(track["com_sq"], nan=1e6),
            diverged=jnp.asarray(diverged),
            clip=state.clip,
            frame=frame,
            assist_force_bw=assist_force,
            assist_moment_bwm=assist_moment,
        )
        return EnvState(state.sim, view, state.clip, frame, steps, obs), info

    # -- one environment ----------------------------------------------------------------------

    def reset_at(self, clip, frame, task: Task | None = None) -> EnvState:
        """The environment in the start state of frame `frame` of clip `clip` (`start_state`)."""
        task = self.task if task is None else task
        clip, frame = jnp.asarray(clip, jnp.int32), jnp.asarray(frame, jnp.int32)
        sim = self.physics.init_one(*self.start_state(clip, frame, task))
        if self.physics.pure:  # the task's tables: no kinematics in the graph
            view = start_view(task, sim.qpos, sim.qvel, sim.act, clip, frame)
        else:
            zero = self.physics.control(np.zeros(self.model.nu))
            view = self.physics.view_one(sim, zero, self.layout.body_ids)
        return self._start(view, clip, frame, task)._replace(sim=sim)

    def reset(self, key: jax.Array) -> EnvState:
        """Reference state initialization at a random clip and frame (`sample_reset`)."""
        no_failures = jnp.zeros(len(self.clip_ids))
        clip, frame = sample_reset(self.task, self.config, key, no_failures, 1)
        return self.reset_at(clip[0], frame[0])

    def step(self, state: EnvState, action, task: Task | None = None) -> tuple[EnvState, StepInfo]:
        """One control step with action (act_dim,) in [-1, 1]; never resets (see AutoReset)."""
        task = self.task if task is None else task
        ctrl, qfrc, action, bad = _controls(self.physics.control(action), self)
        out = self.physics.step_one(state.sim, ctrl, qfrc)
        view = self.physics.view_one(out.state, ctrl, self.layout.body_ids)
        new, info = self._advance(state._replace(sim=None), view, out.diverged | bad, action, task)
        return new._replace(sim=out.state), info._replace(recording=out.recording)

    def close(self) -> None:
        self.physics.close()


def frame_bucket(frames: int, smallest: int = 512) -> int:
    """The frame count a reference set is padded to: the next power of two (at least
    `smallest`), so that clips of different lengths share one compiled graph. The padding is
    the last frame repeated, never read: every frame index is masked by the clip's length."""
    return max(smallest, 1 << max(int(frames) - 1, 0).bit_length())


def _given(start: np.ndarray | None, reference: np.ndarray, name: str) -> np.ndarray:
    """A reference set's start states, checked, or its reference's own."""
    if start is None:
        return reference
    if np.shape(start) != reference.shape or not np.isfinite(start).all():
        raise ValueError(f"{name} must be finite with the reference's shape {reference.shape}")
    return start


def _pad_frames(a: np.ndarray, frames: int) -> jax.Array:
    """(C, T, ...) → (C, frames, ...) float32, the last frame repeated."""
    a = np.asarray(a, np.float32)
    pad = np.repeat(a[:, -1:], frames - a.shape[1], axis=1)
    return jnp.asarray(np.concatenate([a, pad], axis=1))


def _where(mask: jax.Array, new: Any, old: Any) -> Any:
    """new where mask (n,) is set, else old, leaf by leaf."""
    pick = lambda a, b: jnp.where(mask.reshape(mask.shape + (1,) * (b.ndim - 1)), a, b)  # noqa: E731
    return jax.tree.map(pick, new, old)


class _Wrapper:
    """Forwards what it does not define to the environment it wraps (as Brax's wrappers do)."""

    def __init__(self, env: Any):
        self.env = env

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name == "env":
            raise AttributeError(name)
        return getattr(self.env, name)

    @property
    def unwrapped(self) -> Env:
        return self.env.unwrapped

    def close(self) -> None:
        self.env.close()


def _vmapped(env: Env) -> tuple[Callable, Callable, Callable]:
    """reset_at, step and reset_where of a batch: the one-env functions vmapped (pure), each
    taking the task last."""
    reset_at = jax.vmap(env.reset_at, in_axes=(0, 0, None))

    def reset_where(state, mask, clip, frame, task):
        return _where(mask, reset_at(clip, frame, task), state)

    step = jax.vmap(env.step, in_axes=(0, 0, None))
    return jax.jit(reset_at), jax.jit(step), jax.jit(reset_where)


def _host_batch(env: Env, physics: Backend) -> tuple[Callable, Callable, Callable]:
    """reset_at, step and reset_where of a batch on a host backend: its batched physics (one
    call for all environments), then the task functions vmapped and jitted."""
    start_jit, advance, restart = compiling.shared(
        ("host batch", env.signature), lambda: _host_task_functions(env)
    )
    zero, bodies = np.zeros((physics.n_envs, env.model.nu)), env.layout.body_ids

    def reset_at(clip, frame, task):
        sim = physics.init(*env.start_state(clip, frame, task))
        view = physics.view(sim, zero, bodies)
        return start_jit(view, clip, frame, task)._replace(sim=sim)

    def step(state, action, task):
        ctrl, qfrc, action, bad = _controls(physics.control(action), env)
        out = physics.step(state.sim, ctrl, qfrc)
        view = physics.view(out.state, ctrl, bodies)
        new, info = advance(state._replace(sim=None), view, out.diverged | bad, action, task)
        return new._replace(sim=out.state), info._replace(recording=out.recording)

    def reset_where(state, mask, clip, frame, task):
        mask_np = np.asarray(mask)
        if not mask_np.any():
            return state
        sim = physics.reset(state.sim, mask_np, *env.start_state(clip, frame, task))
        view = physics.view(sim, zero, bodies)  # only the rows in mask are used
        return restart(state._replace(sim=None), view, mask, clip, frame, task)._replace(sim=sim)

    return reset_at, step, reset_where


def _host_task_functions(env: Env) -> tuple[Callable, Callable, Callable]:
    """The jitted task parts of a host batch: start, advance, and restart where masked."""
    start = jax.vmap(env.start, in_axes=(0, 0, 0, None))

    def restart(state, view, mask, clip, frame, task):
        return _where(mask, start(view, clip, frame, task), state)

    advance = jax.vmap(env.advance, in_axes=(0, 0, 0, 0, None))
    return jax.jit(start), jax.jit(advance), jax.jit(restart)


class VecEnv(_Wrapper):
    """n_envs environments stepped together: on a pure backend (MJX) `Env.reset_at` and
    `Env.step` vmapped; on the C engine its own batch (one threaded `rollout` call for all) with
    the task functions vmapped. Functions of EnvStates and StepInfos with a leading env axis."""

    def __init__(self, env: Env, n_envs: int, nthread: int | None = None):
        super().__init__(env)
        self.n_envs = n_envs
        one = env.physics
        if one.pure:
            self.physics = one
            self._reset_at, self._step, self._reset_where = compiling.shared(
                ("vmapped", env.signature), lambda: _vmapped(env)
            )
        else:
            self.physics = make_backend(
                one.kind,
                env.model,
                n_envs,
                env.frame_skip,
                one.record_physics_steps,
                record=one.record,
                nthread=nthread,
            )
            self._reset_at, self._step, self._reset_where = _host_batch(env, self.physics)

    def _task(self, task: Task | None) -> Task:
        return self.unwrapped.task if task is None else task

    def reset_at(self, clip, frame, task: Task | None = None) -> EnvState:
        """Every environment at its reference frame: clip and frame (n_envs,)."""
        clip, frame = jnp.asarray(clip, jnp.int32), jnp.asarray(frame, jnp.int32)
        return self._reset_at(clip, frame, self._task(task))

    def reset(self, key: jax.Array, task: Task | None = None) -> EnvState:
        """Every environment at a random clip and frame (`sample_reset`)."""
        env, task = self.unwrapped, self._task(task)
        no_failures = jnp.zeros(task.length.shape[0])
        clip, frame = sample_reset(task, env.config, key, no_failures, self.n_envs)
        return self.reset_at(clip, frame, task)

    def step(self, state: EnvState, action, task: Task | None = None) -> tuple[EnvState, StepInfo]:
        """One control step of every environment with actions (n_envs, M); never resets."""
        return self._step(state, action, self._task(task))

    def reset_where(self, state: EnvState, mask, clip, frame, task: Task | None = None) -> EnvState:
        """The environments in mask (n_envs,) restarted at (clip, frame); the others unchanged."""
        return self._reset_where(state, mask, clip, frame, self._task(task))

    def close(self) -> None:
        if self.physics is not self.env.physics:
            self.physics.close()
        self.env.close()


class AutoReset(_Wrapper):
    """A VecEnv whose finished environments (terminated or truncated) start again at a new
    clip and frame (`sample_reset`: clips weighted by their recent termination rate when
    configured); `info.next_obs` is the observation before the reset."""

    def __init__(self, env: VecEnv):
        super().__init__(env)
        base, n = env.unwrapped, env.n_envs
        config = base.config

        def draw(failure, key, clip, terminated, done, task):
            failure = _update_failure(config, failure, clip, terminated, done)
            key, k = jax.random.split(key)
            new_clip, new_frame = sample_reset(task, config, k, failure, n)
            return failure, key, new_clip, new_frame

        self._draw = compiling.shared(("draw", config, n), lambda: jax.jit(draw))

    def reset(self, key: jax.Array, task: Task | None = None) -> AutoResetState:
        """Every environment at a random clip and frame; no termination seen yet."""
        base, task = self.unwrapped, self.env._task(task)
        key, k = jax.random.split(key)
        no_failures = jnp.zeros(task.length.shape[0])
        clip, frame = sample_reset(task, base.config, k, no_failures, self.env.n_envs)
        return self.reset_at(clip, frame, key, task)

    def reset_at(self, clip, frame, key: jax.Array, task: Task | None = None) -> AutoResetState:
        """Every environment at its reference frame; later resets are drawn with `key`."""
        task = self.env._task(task)
        envs = self.env.reset_at(clip, frame, task)
        return AutoResetState(*envs, key, jnp.zeros(task.length.shape[0]))

    def step(
        self, state: AutoResetState, action, task: Task | None = None
    ) -> tuple[AutoResetState, StepInfo]:
        """One control step of every environment, then the finished ones restarted."""
        task = self.env._task(task)
        envs, info = self.env.step(state.envs, action, task)
        done = info.terminated | info.truncated
        failure, key, clip, frame = self._draw(
            state.failure, state.key, info.clip, info.terminated, done, task
        )
        envs = self.env.reset_where(envs, done, clip, frame, task)
        return AutoResetState(*envs, key, failure), info


def make_env(
    model: mujoco.MjModel,
    refs: ReferenceSet,
    config: EnvConfig,
    backend: str = "mjx",
    *,
    record: bool = False,
) -> Env:
    """One imitation environment on 'mjx' (pure, jittable) or 'cpu' (the C engine).

    record: the backend simulates its recording sensors and `info.recording` holds them.
    """
    frame_skip = control_frame_skip(model, config.control_hz)
    physics = make_backend(backend, model, 1, frame_skip, record=record, nthread=1)
    return Env(model, refs, config, physics)


def training_env(env: Env, n_envs: int, nthread: int | None = None) -> AutoReset:
    """n_envs copies of env, batched and auto-reset, as training steps them.

    nthread: the C engine's threads (default: every available core, at most one per env).
    """
    return AutoReset(VecEnv(env, n_envs, nthread))


__all__ = [
    "AutoReset",
    "AutoResetState",
    "Env",
    "EnvConfig",
    "EnvState",
    "ReferenceSet",
    "StepInfo",
    "VecEnv",
    "View",
    "applied_action",
    "excitation",
    "frame_bucket",
    "make_env",
    "make_reference_set",
    "observe",
    "sample_reset",
    "terminated",
    "tracking",
    "training_env",
]
