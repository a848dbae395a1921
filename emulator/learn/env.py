"""The imitation task of algorithm.md §1 as pure functions over a batch of environments.

    env = make_env(model, make_reference_set(references, model, body_names), EnvConfig())
    state = env.reset(key, n_envs)              # reference state initialization
    state, info = env.step(state, action)       # a ∈ [-1, 1]^M → excitation 0.5 + 0.5·a

Each environment carries its clip index and frame; clips of different lengths are padded to the
longest and masked by their length. A step runs `frame_skip` physics steps (the control rate),
then computes the observation of the new state, the tracking-error vector Δ against the next
reference frame (what the rewards use), termination (key bodies or root too far off, or a
diverged simulation: terminal, never an exception) and truncation (clip end or episode limit).
Finished environments are reset inside `step` to a new random clip and frame; `info.next_obs`
is the observation before that reset, for bootstrapping.

Backends: 'mjx' makes reset/step pure jittable functions (scan over them); 'cpu' runs MuJoCo's C
engine (threaded `rollout`) for the physics and the same jitted functions for everything else.
Observations are raw here: the trainer normalizes them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import mujoco
import numpy as np

from msconvert.emulator.model import control_frame_skip

_FREE = int(mujoco.mjtJoint.mjJNT_FREE)
_ONE_DOF = (int(mujoco.mjtJoint.mjJNT_HINGE), int(mujoco.mjtJoint.mjJNT_SLIDE))
_HINGE = int(mujoco.mjtJoint.mjJNT_HINGE)
MAX_ABS_STATE = 1e8


@dataclass(frozen=True)
class EnvConfig:
    """The task's settings (bracketed starting points of algorithm.md §1)."""

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


class ReferenceSet(NamedTuple):
    """Multi-clip references at the control rate, padded to the longest clip (repeat last)."""

    qpos: np.ndarray  # (C, T, nq)
    qvel: np.ndarray  # (C, T, nv)
    body_pos: np.ndarray  # (C, T, B, 3)
    activation: np.ndarray  # (C, T, na) initial activations at reset
    length: np.ndarray  # (C,) frames of each clip
    clip_ids: tuple[str, ...]
    body_names: tuple[str, ...]


def _get(ref: Any, name: str) -> Any:
    return ref[name] if isinstance(ref, Mapping) else getattr(ref, name)


def make_reference_set(
    references: Sequence[Any],
    model: mujoco.MjModel,
    body_names: Sequence[str],
    activations: Sequence[np.ndarray] | None = None,
    initial_activation: float = 0.05,
) -> ReferenceSet:
    """Stack references (Reference objects or mappings with clip_id, qpos, qvel, body_pos and
    body_names) into a padded set; `activations` (T_c, na) per clip seed the activation at reset."""
    if not references:
        raise ValueError("no references")
    body_names = tuple(body_names)
    for b in body_names:
        if mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, b) < 0:
            raise ValueError(f"key body {b!r} is not in the model")
    qs, vs, bs, acts, ids = [], [], [], [], []
    for c, ref in enumerate(references):
        clip = str(_get(ref, "clip_id"))
        q = np.asarray(_get(ref, "qpos"), np.float64)
        v = np.asarray(_get(ref, "qvel"), np.float64)
        b = np.asarray(_get(ref, "body_pos"), np.float64)
        names = tuple(_get(ref, "body_names"))
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


class View(NamedTuple):
    """What the task reads from a simulated state (batched)."""

    qpos: jax.Array
    qvel: jax.Array
    act: jax.Array
    length: jax.Array  # actuator lengths
    velocity: jax.Array
    force: jax.Array
    body_pos: jax.Array  # (n, B, 3)


class EnvState(NamedTuple):
    sim: Any  # batched mjx.Data, or the CPU backend's state
    view: View
    clip: jax.Array  # (n,) int
    frame: jax.Array  # (n,) int: the reference frame the state corresponds to
    steps: jax.Array  # (n,) control steps since reset
    obs: jax.Array  # (n, obs_dim) raw observation
    key: jax.Array
    failure: jax.Array  # (C,) recent termination rate per clip


class StepInfo(NamedTuple):
    next_obs: jax.Array  # (n, obs_dim) raw observation of s' before any reset
    terminated: jax.Array
    truncated: jax.Array
    error: jax.Array  # (n, E) tracking-error vector Δ (raw)
    joint_error_rad: jax.Array  # (n,) mean |joint-angle error| over non-root DoFs
    body_error_m: jax.Array  # (n,) mean key-body position error
    root_error_m: jax.Array  # (n,)
    effort: jax.Array  # (n,) mean u²
    pose_sq: jax.Array  # (n,) DeepMimic's Σ joint error² (+ root orientation)
    velocity_sq: jax.Array
    body_sq: jax.Array
    com_sq: jax.Array  # root position error² (the centre-of-mass term's stand-in)
    diverged: jax.Array
    clip: jax.Array
    frame: jax.Array


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


def _root(task: Task, layout: Layout, view: View) -> tuple[jax.Array, jax.Array]:
    """Root position (n, 3) and rotation matrix (n, 3, 3); world origin for a fixed base."""
    if layout.free_root:
        return view.qpos[:, :3], quat_to_mat(view.qpos[:, 3:7])
    n = view.qpos.shape[0]
    return jnp.zeros((n, 3)), jnp.broadcast_to(jnp.eye(3), (n, 3, 3))


def _joint_diff(task: Task, q_ref: jax.Array, q: jax.Array) -> jax.Array:
    d = q_ref[:, task.joint_qpos] - q[:, task.joint_qpos]
    return jnp.where(task.joint_is_hinge, _wrap(d), d)


def observe(task: Task, layout: Layout, config: EnvConfig, view: View, clip, frame) -> jax.Array:
    """The raw observation (algorithm.md §1) of a batch of states at their clip frames."""
    pos, rot = _root(task, layout, view)
    rot_t = jnp.swapaxes(rot, -1, -2)
    local = lambda p: jnp.einsum("nij,nbj->nbi", rot_t, p - pos[:, None, :])  # noqa: E731
    parts = [
        view.qpos[:, 2:] if layout.free_root else view.qpos,
        view.qvel,
        local(view.body_pos).reshape(view.qpos.shape[0], -1),
        view.act,
        (view.length - task.length_lo) / task.length_span,
        view.velocity / task.length_span,
        view.force / task.force_max,
    ]
    if layout.free_root:
        parts.append(jnp.einsum("nij,j->ni", rot_t, jnp.array([0.0, 0.0, -1.0])))
    last = task.length[clip] - 1
    for k in config.future_steps:
        f = jnp.minimum(frame + k, last)
        q_ref = task.qpos[clip, f]
        parts.append(_joint_diff(task, q_ref, view.qpos))
        parts.append(local(task.body_pos[clip, f]).reshape(view.qpos.shape[0], -1))
        if layout.free_root:
            parts.append(jnp.einsum("nij,nj->ni", rot_t, q_ref[:, :3] - pos))
            parts.append(quat_error(view.qpos[:, 3:7], q_ref[:, 3:7]))
    parts.append((frame / jnp.maximum(last, 1))[:, None].astype(view.qpos.dtype))
    return jnp.concatenate([jnp.asarray(p, jnp.float32) for p in parts], axis=1)


def tracking(task: Task, layout: Layout, view: View, clip, frame) -> dict[str, jax.Array]:
    """Δ and the scalar errors of states against reference frame `frame` of their clips."""
    q_ref, v_ref = task.qpos[clip, frame], task.qvel[clip, frame]
    b_ref = task.body_pos[clip, frame]
    pos, rot = _root(task, layout, view)
    rot_t = jnp.swapaxes(rot, -1, -2)
    joint = _joint_diff(task, q_ref, view.qpos)
    vel = v_ref[:, task.joint_qvel] - view.qvel[:, task.joint_qvel]
    body_world = b_ref - view.body_pos
    body_local = jnp.einsum("nij,nbj->nbi", rot_t, body_world)
    parts = [joint, vel, body_local.reshape(joint.shape[0], -1)]
    root_err = jnp.zeros(joint.shape[0])
    rot_sq = jnp.zeros(joint.shape[0])
    if layout.free_root:
        root_vec = q_ref[:, :3] - pos
        rot_err = quat_error(view.qpos[:, 3:7], q_ref[:, 3:7])
        parts += [root_vec, rot_err, v_ref[:, :6] - view.qvel[:, :6]]
        root_err = jnp.linalg.norm(root_vec, axis=1)
        rot_sq = (rot_err**2).sum(1)
    body_dist = jnp.linalg.norm(body_world, axis=-1)
    return {
        "error": jnp.concatenate(parts, axis=1),
        "joint_error_rad": jnp.abs(joint).mean(1) if joint.shape[1] else jnp.zeros(joint.shape[0]),
        "body_error_m": body_dist.mean(1),
        "root_error_m": root_err,
        "pose_sq": (joint**2).sum(1) + rot_sq,
        "velocity_sq": (vel**2).sum(1),
        "body_sq": (body_dist**2).sum(1),
        "com_sq": root_err**2,
    }


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


# --- physics ------------------------------------------------------------


class Env:
    """The task on one backend; `reset` and `step` are pure functions of their arguments."""

    def __init__(
        self,
        model: mujoco.MjModel,
        refs: ReferenceSet,
        config: EnvConfig,
        backend: str = "mjx",
        nthread: int | None = None,
    ):
        if backend not in ("mjx", "cpu"):
            raise ValueError(f"backend must be 'mjx' or 'cpu', got {backend!r}")
        if refs.qpos.shape[-1] != model.nq or refs.activation.shape[-1] != model.na:
            raise ValueError("the reference set was made for another model")
        self.model, self.refs, self.config, self.backend = model, refs, config, backend
        self.layout = model_layout(model, refs.body_names)
        self.frame_skip = control_frame_skip(model, config.control_hz)
        self.act_dim = model.nu
        self.muscle_names = self.layout.muscle_names
        self.clip_ids = refs.clip_ids
        self.nthread = nthread
        lay = self.layout
        self.task = Task(
            qpos=jnp.asarray(refs.qpos, jnp.float32),
            qvel=jnp.asarray(refs.qvel, jnp.float32),
            body_pos=jnp.asarray(refs.body_pos, jnp.float32),
            activation=jnp.asarray(refs.activation, jnp.float32),
            length=jnp.asarray(refs.length, jnp.int32),
            joint_qpos=jnp.asarray(lay.joint_qpos),
            joint_qvel=jnp.asarray(lay.joint_qvel),
            joint_is_hinge=jnp.asarray(lay.joint_is_hinge),
            length_lo=jnp.asarray(lay.length_lo, jnp.float32),
            length_span=jnp.asarray(lay.length_span, jnp.float32),
            force_max=jnp.asarray(lay.force_max, jnp.float32),
        )
        self._observe = jax.jit(
            lambda view, clip, frame: observe(self.task, lay, config, view, clip, frame)
        )
        self._tracking = jax.jit(
            lambda view, clip, frame: tracking(self.task, lay, view, clip, frame)
        )
        if backend == "mjx":
            self._init_mjx()
        else:
            self._init_cpu()
        probe = self._probe_view()
        self.obs_dim = int(
            self._observe(probe, jnp.zeros(1, jnp.int32), jnp.zeros(1, jnp.int32)).shape[1]
        )
        self.error_dim = int(
            self._tracking(probe, jnp.zeros(1, jnp.int32), jnp.zeros(1, jnp.int32))["error"].shape[
                1
            ]
        )

    # -- shared ---------------------------------------------------------------------------------

    def _probe_view(self) -> View:
        m = self.model
        z = lambda *s: jnp.zeros((1, *s), jnp.float32)  # noqa: E731
        q = jnp.asarray(self.refs.qpos[:1, 0], jnp.float32)
        return View(q, z(m.nv), z(m.na), z(m.nu), z(m.nu), z(m.nu), z(len(self.refs.body_names), 3))

    def _reference_state(self, clip, frame):
        t = self.task
        return t.qpos[clip, frame], t.qvel[clip, frame], t.activation[clip, frame]

    def _post(self, state: EnvState, view: View, diverged: jax.Array, action: jax.Array):
        """Everything after the physics: Δ, termination, truncation, failure rates, resets to do."""
        cfg = self.config
        frame = state.frame + 1
        track = tracking(self.task, self.layout, view, state.clip, frame)
        finite = jnp.isfinite(track["error"]).all(axis=1)
        terminated = (
            diverged
            | ~finite
            | (track["body_error_m"] > cfg.termination_body_error_m)
            | (track["root_error_m"] > cfg.termination_root_error_m)
        )
        steps = state.steps + 1
        truncated = ~terminated & (
            (frame >= self.task.length[state.clip] - 1) | (steps >= cfg.episode_steps)
        )
        done = terminated | truncated
        next_obs = observe(self.task, self.layout, cfg, view, state.clip, frame)
        u = 0.5 + 0.5 * jnp.clip(action, -1.0, 1.0)
        info = StepInfo(
            next_obs=next_obs,
            terminated=terminated,
            truncated=truncated,
            error=jnp.where(finite[:, None], track["error"], 0.0),
            joint_error_rad=jnp.nan_to_num(track["joint_error_rad"], nan=jnp.pi),
            body_error_m=jnp.nan_to_num(track["body_error_m"], nan=10.0),
            root_error_m=jnp.nan_to_num(track["root_error_m"], nan=10.0),
            effort=(u**2).mean(1),
            pose_sq=jnp.nan_to_num(track["pose_sq"], nan=1e6),
            velocity_sq=jnp.nan_to_num(track["velocity_sq"], nan=1e6),
            body_sq=jnp.nan_to_num(track["body_sq"], nan=1e6),
            com_sq=jnp.nan_to_num(track["com_sq"], nan=1e6),
            diverged=diverged,
            clip=state.clip,
            frame=frame,
        )
        failure = _update_failure(cfg, state.failure, state.clip, terminated, done)
        key, k = jax.random.split(state.key)
        new_clip, new_frame = sample_reset(self.task, cfg, k, failure, state.clip.shape[0])
        clip = jnp.where(done, new_clip, state.clip)
        frame = jnp.where(done, new_frame, frame)
        steps = jnp.where(done, 0, steps)
        return info, done, clip, frame, steps, key, failure

    # -- MJX ------------------------------------------------------------------------------------

    def _init_mjx(self) -> None:
        from mujoco import mjx

        from msconvert.emulator.backends.mjx import default_impl

        self.mx = mjx.put_model(self.model, impl=default_impl())
        data0 = mjx.make_data(self.mx, impl=default_impl())
        mx, skip, bodies = self.mx, self.frame_skip, jnp.asarray(self.layout.body_ids)

        def set_state(q, v, a):
            d = data0.replace(qpos=q.astype(data0.qpos.dtype), qvel=v.astype(data0.qvel.dtype))
            d = d.replace(act=a.astype(data0.act.dtype))
            return mjx.forward(mx, d)

        def view_of(d) -> View:
            # Some derived fields live under `_impl` in recent MJX (direct access is deprecated).
            impl = getattr(d, "_impl", None)
            get = lambda name: getattr(impl, name) if hasattr(impl, name) else getattr(d, name)  # noqa: E731
            return View(
                d.qpos,
                d.qvel,
                d.act,
                get("actuator_length"),
                get("actuator_velocity"),
                d.actuator_force,
                d.xpos[:, bodies],
            )

        def physics(d, ctrl):
            start = d
            d = d.replace(ctrl=ctrl.astype(d.ctrl.dtype))
            d = jax.lax.fori_loop(0, skip, lambda _, d: mjx.step(mx, d), d)
            d = mjx.forward(mx, d)
            state = jnp.concatenate([d.qpos, d.qvel, d.act])
            diverged = ~jnp.isfinite(state).all() | (jnp.abs(state) > MAX_ABS_STATE).any()
            d = jax.tree.map(lambda new, old: jnp.where(diverged, old, new), d, start)
            return d, diverged

        self._set_state = jax.vmap(set_state)
        self._physics = jax.vmap(physics)
        self._view_of = view_of

        def reset_at(clip, frame, key) -> EnvState:
            failure = jnp.zeros(len(self.refs.clip_ids))
            d = self._set_state(*self._reference_state(clip, frame))
            view = view_of(d)
            obs = observe(self.task, self.layout, self.config, view, clip, frame)
            steps = jnp.zeros(clip.shape[0], jnp.int32)
            return EnvState(d, view, clip, frame, steps, obs, key, failure)

        def reset(key, n_envs: int) -> EnvState:
            key, k = jax.random.split(key)
            clip, frame = sample_reset(
                self.task, self.config, k, jnp.zeros(len(self.refs.clip_ids)), n_envs
            )
            return reset_at(clip, frame, key)

        def step(state: EnvState, action):
            action = jnp.nan_to_num(jnp.asarray(action, jnp.float32), nan=jnp.inf)
            bad = ~jnp.isfinite(action).all(axis=1)
            ctrl = 0.5 + 0.5 * jnp.clip(jnp.where(jnp.isfinite(action), action, 0.0), -1.0, 1.0)
            d, diverged = self._physics(state.sim, ctrl)
            diverged = diverged | bad
            view = view_of(d)
            info, done, clip, frame, steps, key, failure = self._post(state, view, diverged, action)
            fresh = self._set_state(*self._reference_state(clip, frame))
            pick = lambda new, old: jnp.where(  # noqa: E731
                done.reshape(done.shape + (1,) * (old.ndim - 1)), new, old
            )
            d = jax.tree.map(pick, fresh, d)
            view = view_of(d)
            obs = observe(self.task, self.layout, self.config, view, clip, frame)
            return EnvState(d, view, clip, frame, steps, obs, key, failure), info

        self.reset = jax.jit(reset, static_argnums=1)
        self.reset_at = jax.jit(reset_at)
        self.step = jax.jit(step)

    # -- C engine -------------------------------------------------------------------------------

    def _init_cpu(self) -> None:
        self._backends: dict[int, Any] = {}
        self._datas: list[mujoco.MjData] = []

        def post(state: EnvState, view: View, diverged, action):
            return self._post(state, view, diverged, action)

        self._post_jit = jax.jit(post)
        self.reset = self._cpu_reset
        self.reset_at = self._cpu_reset_at
        self.step = self._cpu_step

    def _cpu_backend(self, n: int):
        from msconvert.emulator.backends.cpu import CpuBackend

        if n not in self._backends:
            self._backends[n] = CpuBackend(self.model, n, self.frame_skip, nthread=self.nthread)
        while len(self._datas) < n:
            self._datas.append(mujoco.MjData(self.model))
        return self._backends[n]

    def _cpu_views(
        self, qpos: np.ndarray, qvel: np.ndarray, act: np.ndarray, ctrl: np.ndarray
    ) -> View:
        m, n = self.model, qpos.shape[0]
        out = {k: np.zeros((n, s)) for k, s in (("l", m.nu), ("v", m.nu), ("f", m.nu))}
        body = np.zeros((n, len(self.layout.body_ids), 3))
        for i in range(n):
            d = self._datas[i]
            d.qpos[:], d.qvel[:], d.act[:], d.ctrl[:] = qpos[i], qvel[i], act[i], ctrl[i]
            mujoco.mj_forward(m, d)
            out["l"][i], out["v"][i], out["f"][i] = (
                d.actuator_length,
                d.actuator_velocity,
                d.actuator_force,
            )
            body[i] = d.xpos[self.layout.body_ids]
        f32 = lambda x: jnp.asarray(x, jnp.float32)  # noqa: E731
        return View(
            f32(qpos), f32(qvel), f32(act), f32(out["l"]), f32(out["v"]), f32(out["f"]), f32(body)
        )

    def _cpu_reset(self, key, n_envs: int) -> EnvState:
        failure = jnp.zeros(len(self.refs.clip_ids))
        key, k = jax.random.split(key)
        clip, frame = sample_reset(self.task, self.config, k, failure, n_envs)
        return self._cpu_reset_at(clip, frame, key)

    def _cpu_reset_at(self, clip, frame, key) -> EnvState:
        clip, frame = jnp.asarray(clip, jnp.int32), jnp.asarray(frame, jnp.int32)
        n_envs = int(clip.shape[0])
        backend = self._cpu_backend(n_envs)
        failure = jnp.zeros(len(self.refs.clip_ids))
        q, v, a = (np.asarray(x, np.float64) for x in self._reference_state(clip, frame))
        sim = backend.init(q, v, a)
        view = self._cpu_views(q, v, a, np.zeros((n_envs, self.model.nu)))
        obs = self._observe(view, clip, frame)
        return EnvState(sim, view, clip, frame, jnp.zeros(n_envs, jnp.int32), obs, key, failure)

    def _cpu_step(self, state: EnvState, action) -> tuple[EnvState, StepInfo]:
        n = state.clip.shape[0]
        backend = self._cpu_backend(n)
        action = np.asarray(action, np.float64)
        bad = ~np.isfinite(action).all(axis=1)
        ctrl = 0.5 + 0.5 * np.clip(np.where(np.isfinite(action), action, 0.0), -1.0, 1.0)
        result = backend.step(state.sim, ctrl)
        q, v, a = backend.arrays(result.state)
        view = self._cpu_views(q, v, a, ctrl)
        diverged = jnp.asarray(result.diverged | bad)
        info, done, clip, frame, steps, key, failure = self._post_jit(
            state._replace(sim=None),
            view,
            diverged,
            jnp.asarray(np.where(np.isfinite(action), action, 0.0), jnp.float32),
        )
        done_np = np.asarray(done)
        sim = result.state
        if done_np.any():
            rq, rv, ra = (np.asarray(x, np.float64) for x in self._reference_state(clip, frame))
            sim = backend.reset(sim, done_np, rq, rv, ra)
            q2, v2, a2 = backend.arrays(sim)
            ctrl2 = np.where(done_np[:, None], 0.0, ctrl)
            view = self._cpu_views(q2, v2, a2, ctrl2)
        obs = self._observe(view, clip, frame)
        return EnvState(sim, view, clip, frame, steps, obs, key, failure), info

    def close(self) -> None:
        for b in getattr(self, "_backends", {}).values():
            b.close()


def make_env(
    model: mujoco.MjModel, refs: ReferenceSet, config: EnvConfig, backend: str = "mjx"
) -> Env:
    """The imitation environment on 'mjx' (pure, jittable) or 'cpu' (C engine)."""
    return Env(model, refs, config, backend)


__all__ = [
    "Env",
    "EnvConfig",
    "EnvState",
    "ReferenceSet",
    "StepInfo",
    "View",
    "make_env",
    "make_reference_set",
    "sample_reset",
]
