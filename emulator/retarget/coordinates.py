"""The IK's coordinates: the model's driven independent DoFs, their limits, and the joint couplings.

MuJoCo models couple joints with `mjEQ_JOINT` equalities, y - y0 = a0 + a1 x' + ... + a4 x'^4
with x' = x - x0 (x0, y0 the joints' qpos0). The IK moves only independent DoFs and computes
every coupled joint from its polynomial, so the couplings hold exactly, never approximately.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import mujoco
import numpy as np

_SCALAR = (int(mujoco.mjtJoint.mjJNT_HINGE), int(mujoco.mjtJoint.mjJNT_SLIDE))
_NDOF = {int(mujoco.mjtJoint.mjJNT_FREE): 6, int(mujoco.mjtJoint.mjJNT_BALL): 3}
_RANGE_SAMPLES = 4001
# Some models' own coupling polynomials leave their slaves' ranges by ~1e-4 (MyoFullBody's knee
# patella rotation near full extension); within this slack a slave still counts as in range.
RANGE_SLACK = 5e-4


@dataclass(frozen=True, eq=False)
class Couplings:
    """All active joint-coupling equalities of a model, ordered so masters precede their slaves."""

    slave_qadr: np.ndarray  # (K,) qpos address of each coupled joint
    slave_dof: np.ndarray  # (K,) its dof
    master_qadr: np.ndarray  # (K,) qpos address of the joint it follows
    coef: np.ndarray  # (K, 5) polynomial coefficients a0..a4
    slave_q0: np.ndarray  # (K,)
    master_q0: np.ndarray  # (K,)
    level: np.ndarray  # (K,) 0 when the master is independent, else 1 + its master's level
    source: np.ndarray  # (K,) index of the coupling defining the master (-1 for level 0)
    fixed_qadr: np.ndarray  # joints locked by a one-joint equality
    fixed_value: np.ndarray

    def apply(self, qpos: np.ndarray) -> None:
        """Set every coupled and locked joint from its master, in place; qpos is (..., nq)."""
        qpos[..., self.fixed_qadr] = self.fixed_value
        for lev in range(int(self.level.max(initial=-1)) + 1):
            k = self.level == lev
            x = qpos[..., self.master_qadr[k]] - self.master_q0[k]
            qpos[..., self.slave_qadr[k]] = self.slave_q0[k] + _polyval(self.coef[k], x)

    def derivatives(self, qpos: np.ndarray) -> np.ndarray:
        """d(slave)/d(independent master) of every coupling at this configuration (chain rule)."""
        x = qpos[self.master_qadr] - self.master_q0
        c = self.coef
        deriv = c[:, 1] + x * (2 * c[:, 2] + x * (3 * c[:, 3] + x * 4 * c[:, 4]))
        for lev in range(1, int(self.level.max(initial=0)) + 1):
            k = np.flatnonzero(self.level == lev)
            deriv[k] *= deriv[self.source[k]]
        return deriv


def _polyval(coef: np.ndarray, x: np.ndarray) -> np.ndarray:
    """a0 + a1 x + ... + a4 x^4 row-wise (Horner)."""
    return coef[..., 0] + x * (
        coef[..., 1] + x * (coef[..., 2] + x * (coef[..., 3] + x * coef[..., 4]))
    )


def joint_couplings(model: mujoco.MjModel) -> Couplings:
    """Read the active `mjEQ_JOINT` equalities; other equality types are left to the physics."""
    rows = [
        e
        for e in range(model.neq)
        if model.eq_type[e] == int(mujoco.mjtEq.mjEQ_JOINT) and model.eq_active0[e]
    ]
    for e in rows:
        j = model.eq_obj1id[e]
        if model.jnt_type[j] not in _SCALAR:
            raise ValueError(
                f"joint equality '{model.equality(e).name}' couples a non-scalar joint"
            )
    locked = [e for e in rows if model.eq_obj2id[e] < 0]
    coupled = [e for e in rows if model.eq_obj2id[e] >= 0]
    slave_joint = {int(model.eq_obj1id[e]): i for i, e in enumerate(coupled)}
    if len(slave_joint) < len(coupled):
        raise ValueError("a joint is coupled by more than one joint equality")
    # Levels by repeated relaxation: a slave whose master is itself coupled comes one level later.
    source = np.array([slave_joint.get(int(model.eq_obj2id[e]), -1) for e in coupled], dtype=int)
    level = np.zeros(len(coupled), dtype=int)
    for _ in range(len(coupled)):
        new = np.where(source >= 0, level[np.maximum(source, 0)] + 1, 0)
        if np.array_equal(new, level):
            break
        level = new
    else:
        if len(coupled):
            raise ValueError("joint equalities form a cycle")
    sj = np.array([model.eq_obj1id[e] for e in coupled], dtype=int)
    mj = np.array([model.eq_obj2id[e] for e in coupled], dtype=int)
    lj = np.array([model.eq_obj1id[e] for e in locked], dtype=int)
    order = np.argsort(level, kind="stable")
    remap = np.empty_like(order)
    remap[order] = np.arange(order.size)
    src = source[order]
    return Couplings(
        slave_qadr=model.jnt_qposadr[sj][order],
        slave_dof=model.jnt_dofadr[sj][order],
        master_qadr=model.jnt_qposadr[mj][order],
        coef=np.array([model.eq_data[e][:5] for e in coupled], dtype=float).reshape(-1, 5)[order],
        slave_q0=model.qpos0[model.jnt_qposadr[sj]][order],
        master_q0=model.qpos0[model.jnt_qposadr[mj]][order],
        level=level[order],
        source=np.where(src >= 0, remap[np.maximum(src, 0)], -1),
        fixed_qadr=model.jnt_qposadr[lj],
        fixed_value=model.qpos0[model.jnt_qposadr[lj]]
        + np.array([model.eq_data[e][0] for e in locked]),
    )


@dataclass(frozen=True, eq=False)
class JointSpace:
    """The DoFs the IK moves (root first), their box limits, and how coupled DoFs follow them."""

    dofs: np.ndarray  # (n,) independent driven dof indices
    qadr: np.ndarray  # (n,) qpos address for hinge/slide dofs, -1 for free/ball dofs
    lower: np.ndarray  # (n,) limits of hinge/slide dofs after the couplings' limits; -inf if none
    upper: np.ndarray
    is_root: np.ndarray  # (n,) dofs of the root body (left free by the posture term)
    couplings: Couplings
    coupled: np.ndarray  # indices into couplings of the slaves driven through `dofs`
    coupled_col: np.ndarray  # for each of those, the column in `dofs` of its independent master
    neutral: np.ndarray  # (nq,) qpos0 clamped into range, couplings applied

    @property
    def size(self) -> int:
        return int(self.dofs.size)

    @property
    def active_dofs(self) -> np.ndarray:
        """Independent dofs followed by the coupled dofs they drive (the Jacobian's columns)."""
        return np.concatenate((self.dofs, self.couplings.slave_dof[self.coupled]))

    def constrain(self, qpos: np.ndarray) -> None:
        """Clamp the independent hinges/slides into their limits and apply couplings, in place."""
        s = self.qadr >= 0
        a = self.qadr[s]
        qpos[a] = np.clip(qpos[a], self.lower[s], self.upper[s])
        self.couplings.apply(qpos)

    def coupling_map(self, qpos: np.ndarray) -> np.ndarray:
        """(n_active, n) derivative of the active dofs with respect to the independent ones."""
        n = self.size
        out = np.zeros((n + self.coupled.size, n))
        out[np.arange(n), np.arange(n)] = 1.0
        out[n + np.arange(self.coupled.size), self.coupled_col] = self.couplings.derivatives(qpos)[
            self.coupled
        ]
        return out


def _ancestors(model: mujoco.MjModel, bodies: Sequence[int]) -> np.ndarray:
    """Mask over bodies: on the path from any of `bodies` up to the world."""
    mask = np.zeros(model.nbody, dtype=bool)
    for b in bodies:
        while b > 0 and not mask[b]:
            mask[b] = True
            b = model.body_parentid[b]
    return mask


def _feasible_interval(
    couplings: Couplings,
    neutral: np.ndarray,
    master: int,
    slaves: np.ndarray,
    lo_q: np.ndarray,
    hi_q: np.ndarray,
) -> tuple[float, float]:
    """The interval of a master's values around neutral where all its slaves stay within range."""

    def ok(x: np.ndarray) -> np.ndarray:
        q = np.repeat(neutral[None], x.size, axis=0)
        q[:, master] = x
        couplings.apply(q)
        y = q[:, slaves]
        return np.all((y >= lo_q[slaves] - RANGE_SLACK) & (y <= hi_q[slaves] + RANGE_SLACK), 1)

    xs = np.linspace(lo_q[master], hi_q[master], _RANGE_SAMPLES)
    good = ok(xs)
    if not good.any():
        raise ValueError("a coupled joint cannot stay within its range for any master value")
    idx = np.flatnonzero(good)
    a = b = idx[np.argmin(np.abs(xs[idx] - neutral[master]))]  # feasible run nearest neutral
    while a > 0 and good[a - 1]:
        a -= 1
    while b < xs.size - 1 and good[b + 1]:
        b += 1

    def refine(inside: float, outside: float) -> float:
        for _ in range(40):  # bisection far below the sampling step
            mid = 0.5 * (inside + outside)
            inside, outside = (mid, outside) if ok(np.array([mid]))[0] else (inside, mid)
        return inside

    left = xs[a] if a == 0 else refine(xs[a], xs[a - 1])
    right = xs[b] if b == xs.size - 1 else refine(xs[b], xs[b + 1])
    return float(left), float(right)


def build_joint_space(model: mujoco.MjModel, target_bodies: Sequence[int]) -> JointSpace:
    """The joints that move the target bodies, minus coupled ones, with limits made consistent."""
    couplings = joint_couplings(model)
    on_path = _ancestors(model, target_bodies)
    slave_of = {int(q): k for k, q in enumerate(couplings.slave_qadr)}
    fixed = set(couplings.fixed_qadr.tolist())

    def independent_master(k: int) -> int:
        while couplings.source[k] >= 0:
            k = int(couplings.source[k])
        return int(couplings.master_qadr[k])

    driven_q: set[int] = set()
    for j in range(model.njnt):
        q = int(model.jnt_qposadr[j])
        if not on_path[model.jnt_bodyid[j]] or q in fixed:
            continue
        driven_q.add(independent_master(slave_of[q]) if q in slave_of else q)
    joints = sorted(j for j in range(model.njnt) if int(model.jnt_qposadr[j]) in driven_q)

    # Neutral pose: qpos0 with every limited scalar joint clamped into its range.
    scalar = np.isin(model.jnt_type, _SCALAR)
    limited = scalar & (model.jnt_limited.astype(bool))
    lo_q = np.full(model.nq, -np.inf)
    hi_q = np.full(model.nq, np.inf)
    lo_q[model.jnt_qposadr[limited]] = model.jnt_range[limited, 0]
    hi_q[model.jnt_qposadr[limited]] = model.jnt_range[limited, 1]
    neutral = np.clip(model.qpos0, lo_q, hi_q)

    # A master's usable range is where all its coupled joints (at any depth) stay within theirs.
    lo_eff, hi_eff = lo_q.copy(), hi_q.copy()
    masters = np.array([independent_master(k) for k in range(couplings.slave_qadr.size)], int)
    for mq in np.unique(masters):
        if np.isfinite(lo_q[mq]) and np.isfinite(hi_q[mq]):
            slaves = couplings.slave_qadr[masters == mq]
            lo_eff[mq], hi_eff[mq] = _feasible_interval(couplings, neutral, mq, slaves, lo_q, hi_q)
    neutral = np.clip(neutral, lo_eff, hi_eff)
    couplings.apply(neutral)

    dofs, qadr, lower, upper, is_root = [], [], [], [], []
    for j in joints:
        n = _NDOF.get(int(model.jnt_type[j]), 1)
        q = int(model.jnt_qposadr[j]) if scalar[j] else -1
        for i in range(n):
            dofs.append(int(model.jnt_dofadr[j]) + i)
            qadr.append(q)
            lower.append(lo_eff[q] if q >= 0 else -np.inf)
            upper.append(hi_eff[q] if q >= 0 else np.inf)
            is_root.append(model.body_parentid[model.jnt_bodyid[j]] == 0)
    dofs_a = np.array(dofs, dtype=int)
    col_of_q = {q: c for c, q in enumerate(qadr) if q >= 0}
    coupled = [k for k in range(couplings.slave_qadr.size) if independent_master(k) in col_of_q]
    return JointSpace(
        dofs=dofs_a,
        qadr=np.array(qadr, dtype=int),
        lower=np.array(lower, dtype=float),
        upper=np.array(upper, dtype=float),
        is_root=np.array(is_root, dtype=bool),
        couplings=couplings,
        coupled=np.array(coupled, dtype=int),
        coupled_col=np.array([col_of_q[independent_master(k)] for k in coupled], dtype=int),
        neutral=neutral,
    )
