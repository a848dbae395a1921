"""Small muscle models built in code (MjSpec), for fast tests of the simulation and control code."""

from __future__ import annotations

import mujoco
import numpy as np

from msconvert.emulator.model import compile_spec

_UPPER, _FORE = 0.30, 0.25  # segment lengths (m)
_Y_AXIS = [np.cos(np.pi / 4), np.sin(np.pi / 4), 0.0, 0.0]  # turns a cylinder's z axis onto y

# name, sites as (body, x, z) in the body's joint frame, F_max (N). The arm lies along +x in the
# x-z plane; flexion raises it towards +z. Each path wraps the cylinder at every joint it crosses,
# on the flexor (+z) or extensor (-z) side, so moment arms stay near the cylinder radius and vary
# smoothly with posture (and muscle excursions are a few centimetres, as in a human arm).
_ARM_MUSCLES = (
    ("shoulder_flexor", (("world", -0.08, 0.04), ("upper_arm", 0.12, 0.04)), 400.0),
    ("shoulder_extensor", (("world", -0.08, -0.04), ("upper_arm", 0.12, -0.04)), 400.0),
    ("elbow_flexor", (("upper_arm", 0.12, 0.03), ("forearm", 0.06, 0.02)), 300.0),
    ("elbow_extensor", (("upper_arm", 0.12, -0.03), ("forearm", -0.03, -0.02)), 300.0),
    (
        "biarticular_flexor",
        (("world", -0.10, 0.04), ("upper_arm", 0.15, 0.045), ("forearm", 0.08, 0.02)),
        250.0,
    ),
    (
        "biarticular_extensor",
        (("world", -0.10, -0.04), ("upper_arm", 0.15, -0.045), ("forearm", -0.03, -0.025)),
        250.0,
    ),
    ("shoulder_flexor_deep", (("world", -0.05, 0.03), ("upper_arm", 0.06, 0.03)), 150.0),
    ("elbow_flexor_deep", (("upper_arm", 0.20, 0.02), ("forearm", 0.04, 0.015)), 150.0),
)


def _add_muscle(
    spec: mujoco.MjSpec,
    name: str,
    path: list[mujoco.MjsSite | tuple[mujoco.MjsGeom, mujoco.MjsSite]],
    force: float,
) -> None:
    """A Hill-type muscle on a spatial tendon through sites and (wrap cylinder, side site) pairs."""
    tendon = spec.add_tendon(name=f"{name}_tendon")
    for item in path:
        if isinstance(item, tuple):
            tendon.wrap_geom(item[0].name, item[1].name)
        else:
            tendon.wrap_site(item.name)
    act = spec.add_actuator(name=name, target=tendon.name)
    act.trntype = mujoco.mjtTrn.mjTRN_TENDON
    # MuJoCo's Hill-type muscle: activation dynamics (10 ms / 40 ms), F-L-V curves, ctrl in [0, 1].
    act.set_to_muscle(timeconst=[0.01, 0.04], tausmooth=0.0, range=[0.75, 1.05], force=force)


def _wrap(
    body: mujoco.MjsBody,
    name: str,
    pos: list[float],
    radius: float,
    normal: tuple[float, float, float] = (0, 0, 1),
) -> dict:
    """A massless, non-colliding wrapping cylinder on a hinge axis (y), with side sites: key 1 on
    the flexor side (along `normal`), key -1 on the extensor side."""
    cyl = body.add_geom(
        name=f"{name}_wrap",
        type=mujoco.mjtGeom.mjGEOM_CYLINDER,
        pos=pos,
        quat=_Y_AXIS,
        size=[radius, 0.02, 0],
        contype=0,
        conaffinity=0,
        mass=0,
        group=3,
    )
    side = {}
    for sign, label in ((1, "flexor"), (-1, "extensor")):
        at = np.asarray(pos) + sign * 2 * radius * np.asarray(normal, dtype=float)
        side[sign] = (cyl, body.add_site(name=f"{name}_{label}_side", pos=at))
    return side


def planar_arm(n_muscles: int = 6, timestep: float = 0.002) -> mujoco.MjModel:
    """A two-joint planar arm (shoulder, elbow) on a fixed base, driven by 1-8 Hill-type muscles."""
    if not 1 <= n_muscles <= len(_ARM_MUSCLES):
        raise ValueError(f"n_muscles must be in 1..{len(_ARM_MUSCLES)}, got {n_muscles}")
    spec = mujoco.MjSpec()
    spec.modelname = "planar_arm"
    spec.compiler.degree = False  # joint ranges in radians
    spec.option.timestep = timestep
    shoulder_at = np.array([0.0, 0.0, 1.0])
    upper = spec.worldbody.add_body(name="upper_arm", pos=shoulder_at)
    upper.add_joint(
        name="shoulder",
        type=mujoco.mjtJoint.mjJNT_HINGE,
        axis=[0, -1, 0],  # positive angle raises the arm (flexion)
        range=[-1.2, 1.5],
        limited=mujoco.mjtLimited.mjLIMITED_TRUE,
        damping=0.5,
    )
    upper.add_geom(
        type=mujoco.mjtGeom.mjGEOM_CAPSULE,
        fromto=[0, 0, 0, _UPPER, 0, 0],
        size=[0.03, 0, 0],
        mass=2.0,
        contype=0,
        conaffinity=0,
    )
    fore = upper.add_body(name="forearm", pos=[_UPPER, 0, 0])
    fore.add_joint(
        name="elbow",
        type=mujoco.mjtJoint.mjJNT_HINGE,
        axis=[0, -1, 0],
        range=[0.0, 2.2],
        limited=mujoco.mjtLimited.mjLIMITED_TRUE,
        damping=0.3,
    )
    fore.add_geom(
        type=mujoco.mjtGeom.mjGEOM_CAPSULE,
        fromto=[0, 0, 0, _FORE, 0, 0],
        size=[0.025, 0, 0],
        mass=1.2,
        contype=0,
        conaffinity=0,
    )
    fore.add_site(name="hand", pos=[_FORE, 0, 0])
    bodies = {"world": spec.worldbody, "upper_arm": upper, "forearm": fore}
    # The world sites are given relative to the shoulder joint, like the others to their joint.
    offset = {"world": shoulder_at, "upper_arm": np.zeros(3), "forearm": np.zeros(3)}
    shoulder = _wrap(spec.worldbody, "shoulder", list(shoulder_at), 0.035)
    elbow = _wrap(upper, "elbow", [_UPPER, 0.0, 0.0], 0.025)
    for name, sites, force in _ARM_MUSCLES[:n_muscles]:
        path: list = []
        for k, (body, x, z) in enumerate(sites):
            if k > 0:  # the joint crossed between this site and the previous one
                joint = elbow if body == "forearm" else shoulder
                path.append(joint[1 if z > 0 else -1])
            label = "origin" if k == 0 else ("insertion" if k == len(sites) - 1 else f"via{k}")
            path.append(bodies[body].add_site(name=f"{name}_{label}", pos=offset[body] + [x, 0, z]))
        _add_muscle(spec, name, path, force)
    return compile_spec(spec, "planar_arm")


_LEG, _FOOT = 0.45, (0.10, 0.05, 0.02)  # leg length (m); foot box half-sizes (m)


def standing_block(timestep: float = 0.002) -> mujoco.MjModel:
    """A free-floating torso on two hinged legs with box feet on a floor, with 8 muscles (_r/_l)."""
    spec = mujoco.MjSpec()
    spec.modelname = "standing_block"
    spec.compiler.degree = False
    spec.option.timestep = timestep
    spec.worldbody.add_geom(
        name="floor", type=mujoco.mjtGeom.mjGEOM_PLANE, size=[0, 0, 0.05], contype=1, conaffinity=1
    )
    # Standing height: feet just touching the floor with straight legs.
    height = _LEG + 2 * _FOOT[2] + 0.05
    torso = spec.worldbody.add_body(name="torso", pos=[0, 0, height])
    torso.add_freejoint(name="root")
    torso.add_geom(
        type=mujoco.mjtGeom.mjGEOM_BOX,
        size=[0.08, 0.12, 0.05],
        mass=20.0,
        contype=0,
        conaffinity=0,
    )
    hinge = dict(type=mujoco.mjtJoint.mjJNT_HINGE, axis=[0, -1, 0], damping=1.0)
    hinge["limited"] = mujoco.mjtLimited.mjLIMITED_TRUE
    for side, y in (("r", -0.08), ("l", 0.08)):
        leg = torso.add_body(name=f"leg_{side}", pos=[0, y, -0.05])
        leg.add_joint(name=f"hip_{side}", range=[-1.0, 1.0], **hinge)
        leg.add_geom(
            type=mujoco.mjtGeom.mjGEOM_CAPSULE,
            fromto=[0, 0, 0, 0, 0, -_LEG],
            size=[0.03, 0, 0],
            mass=4.0,
            contype=0,
            conaffinity=0,
        )
        foot = leg.add_body(name=f"foot_{side}", pos=[0, 0, -_LEG])
        foot.add_joint(name=f"ankle_{side}", range=[-0.6, 0.6], **hinge)
        foot.add_geom(
            name=f"foot_{side}_box",
            type=mujoco.mjtGeom.mjGEOM_BOX,
            pos=[0.04, 0, -_FOOT[2]],
            size=list(_FOOT),
            mass=1.0,
            contype=1,
            conaffinity=1,
            friction=[1.0, 0.005, 0.0001],
        )
        # The hip wraps on the leg's side of the joint; the leg points down, so the flexor
        # (front) side is +x.
        hip = _wrap(leg, f"hip_{side}", [0.0, 0.0, 0.0], 0.04, normal=(1, 0, 0))
        ankle = _wrap(foot, f"ankle_{side}", [0.0, 0.0, 0.0], 0.03, normal=(1, 0, 0))
        paths = {
            "hip_flexor": ((torso, [0.06, y, -0.02]), hip[1], (leg, [0.05, 0, -0.15])),
            "hip_extensor": ((torso, [-0.06, y, -0.02]), hip[-1], (leg, [-0.05, 0, -0.15])),
            "ankle_dorsiflexor": ((leg, [0.035, 0, -0.30]), ankle[1], (foot, [0.12, 0, -0.015])),
            "ankle_plantarflexor": (
                (leg, [-0.035, 0, -0.30]),
                ankle[-1],
                (foot, [-0.05, 0, -0.015]),
            ),
        }
        for muscle, (origin, wrap, insertion) in paths.items():
            name = f"{muscle}_{side}"
            o = origin[0].add_site(name=f"{name}_origin", pos=origin[1])
            i = insertion[0].add_site(name=f"{name}_insertion", pos=insertion[1])
            _add_muscle(spec, name, [o, wrap, i], 1500.0)
    return compile_spec(spec, "standing_block")


def muscle_pendulum(timestep: float = 0.002) -> mujoco.MjModel:
    """The smallest muscle model: one hinge on a fixed base, a flexor and an extensor on straight
    site tendons (no wrapping). For tests whose subject is compilation, not the physics."""
    spec = mujoco.MjSpec()
    spec.modelname = "muscle_pendulum"
    spec.compiler.degree = False
    spec.option.timestep = timestep
    link = spec.worldbody.add_body(name="link", pos=[0.0, 0.0, 1.0])
    link.add_joint(
        name="hinge",
        type=mujoco.mjtJoint.mjJNT_HINGE,
        axis=[0, -1, 0],
        range=[-1.0, 1.0],
        limited=mujoco.mjtLimited.mjLIMITED_TRUE,
        damping=0.5,
    )
    link.add_geom(
        type=mujoco.mjtGeom.mjGEOM_CAPSULE,
        fromto=[0, 0, 0, _UPPER, 0, 0],
        size=[0.03, 0, 0],
        mass=1.0,
        contype=0,
        conaffinity=0,
    )
    for name, z in (("flexor", 0.05), ("extensor", -0.05)):
        origin = spec.worldbody.add_site(name=f"{name}_origin", pos=[-0.08, 0.0, 1.0 + z])
        insertion = link.add_site(name=f"{name}_insertion", pos=[0.12, 0.0, 0.6 * z])
        _add_muscle(spec, name, [origin, insertion], 200.0)
    return compile_spec(spec, "muscle_pendulum")
