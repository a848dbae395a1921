"""Exports of one catalog clip to the formats other tools read: CSV, OpenSim .sto/.mot, NumPy .npz.

    export_clip(ds, clip_id, "sto", "out/walk")       # out/walk_activation.sto, ..._excitation.sto
    export_clip(ds, clip_id, "mot", "out/walk.mot")   # kinematics in degrees for OpenSim
    header, columns, data = read_sto("out/walk_activation.sto")

`out` is a path prefix: a trailing extension of the format is dropped, and an existing directory
gets files named after the clip id ('/' becomes '_'). Multi-file formats (csv, sto) add
'_<field>' to the prefix; single-file formats (mot, npz) add only the extension.

The .mot root angles follow OpenSim's gait models (ground_pelvis CustomJoint): pelvis_tilt,
pelvis_list, pelvis_rotation are intrinsic (body-fixed) Z-X-Y Euler angles, in OpenSim's axes
(X forward, Y up, Z right), of the root's rotation away from the model's neutral root orientation
(qpos0), in which every msconvert model faces -y in MuJoCo's z-up world (the correspondence files'
calibration checks this). MuJoCo world x, y, z are therefore OpenSim -Z, -X, Y; pelvis_tx/ty/tz
are the root position in those OpenSim axes. Hinge angles are written in degrees and slides in
metres (the model tells which is which); a ball joint becomes '<joint>_rx', '_ry', '_rz',
intrinsic X-Y-Z Euler angles in degrees in its parent frame. Angles are unwrapped over time.
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import xarray as xr

from msconvert.catalog.schema import DIM_TIME, is_time_dim
from msconvert.dims import select_solution

if TYPE_CHECKING:
    import mujoco

FORMATS = ("csv", "sto", "mot", "npz")
STO_DEFAULT_FIELDS = ("activation", "excitation", "muscle_force")
# Kinematics for .mot, most preferred first: the emulation's rollout, then the retargeted reference.
MOT_SOURCES = {
    "qpos": "emulated kinematics",
    "emulated_qpos": "emulated kinematics",
    "reference_qpos": "retargeted reference kinematics",
}
FREE_SUFFIXES = ("x", "y", "z", "qw", "qx", "qy", "qz")
BALL_SUFFIXES = ("qw", "qx", "qy", "qz")
# OpenSim ground axes (rows: X forward, Y up, Z right) in MuJoCo's world, for a model facing -y.
MUJOCO_TO_OPENSIM = np.array([[0.0, -1.0, 0.0], [0.0, 0.0, 1.0], [-1.0, 0.0, 0.0]])
ROOT_COLUMNS = (
    "pelvis_tilt",
    "pelvis_list",
    "pelvis_rotation",
    "pelvis_tx",
    "pelvis_ty",
    "pelvis_tz",
)


def export_clip(
    ds: xr.Dataset,
    clip_id: str,
    fmt: str,
    out: str | os.PathLike[str],
    fields: Sequence[str] | None = None,
    *,
    model: str | os.PathLike[str] | mujoco.MjModel | None = None,
    solution: int | None = None,
) -> list[Path]:
    """Write one clip as csv, sto, mot or npz under the prefix `out`; return the files written.

    `fields` (names, or one comma-separated string) picks variables (csv, sto, npz) or the
    kinematics variable (mot). `model` (an MJCF path or MjModel) tells hinge from slide joints
    for .mot; None loads the clip's model when it is the packaged default. `solution`: which
    muscle solution of a clip converted with --solutions K (None: 0, the usual answer). Bad
    requests (format, field, model, solution) raise ValueError with a one-line message naming
    what exists.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    ds = select_solution(ds, solution, clip_id)
    prefix = _prefix(Path(out), clip_id, fmt)
    if fmt == "mot":
        return [_export_mot(ds, clip_id, prefix, fields, model)]
    if fmt == "npz":
        return [_export_npz(ds, clip_id, prefix, fields)]
    if fmt == "sto":
        names = _select(ds, clip_id, fields, _sto_defaults(ds), time_first=True)
        return [_export_sto(ds[name], clip_id, name, prefix) for name in names]
    default = [str(n) for n, v in ds.data_vars.items() if DIM_TIME in v.dims]
    names = _select(ds, clip_id, fields, default, time_first=True)
    return [_export_csv(ds[name], name, prefix) for name in names]


def read_sto(path: str | os.PathLike[str]) -> tuple[dict[str, str], list[str], np.ndarray]:
    """Parse an OpenSim .sto/.mot file: (header, column labels with 'time', rows × columns).

    The header maps 'name' (the first line), every 'key=value' line (values as text, e.g.
    header['nRows'] == '151'), and 'description' (other header lines joined by newlines).
    """
    path = Path(path)
    header: dict[str, str] = {}
    description: list[str] = []
    with path.open(encoding="utf-8") as f:
        lines = iter(enumerate(f, start=1))
        for number, raw in lines:
            line = raw.rstrip("\r\n")
            if line.strip() == "endheader":
                break
            key, eq, value = line.partition("=")
            if eq and key.strip() and value.strip():
                header[key.strip()] = value.strip()
            elif "name" not in header and number == 1:
                header["name"] = line.strip()
            elif line.strip():
                description.append(line.strip())
        else:
            raise ValueError(f"{path}: no 'endheader' line")
        labels_line = next(lines, (0, ""))[1].rstrip("\r\n")
        columns = _split(labels_line)
        if not columns or columns[0] != "time":
            raise ValueError(f"{path}: the column-label line must start with 'time'")
        rows = []
        for number, raw in lines:
            if not raw.strip():
                continue
            tokens = _split(raw.rstrip("\r\n"))
            if len(tokens) != len(columns):
                raise ValueError(
                    f"{path}:{number}: {len(tokens)} values for {len(columns)} columns"
                )
            try:
                rows.append([_number(t) for t in tokens])
            except ValueError:
                raise ValueError(f"{path}:{number}: a value is not a number") from None
    if description:
        header["description"] = "\n".join(description)
    data = np.array(rows, dtype=np.float64).reshape(len(rows), len(columns))
    for key, size in (("nRows", data.shape[0]), ("nColumns", data.shape[1])):
        if key in header and header[key] != str(size):
            raise ValueError(f"{path}: header says {key}={header[key]} but the file has {size}")
    return header, columns, data


def write_sto(
    path: str | os.PathLike[str],
    name: str,
    columns: Sequence[str],
    time: np.ndarray,
    data: np.ndarray,
    *,
    in_degrees: bool,
    description: Iterable[str] = (),
) -> Path:
    """Write an OpenSim storage (.sto or .mot): header, tab-separated labels starting with time."""
    data = np.asarray(data)
    time = np.asarray(time, dtype=np.float64)
    if data.ndim != 2 or data.shape != (time.size, len(columns)):
        raise ValueError(
            f"data shape {data.shape} does not match {time.size} times × {len(columns)} columns"
        )
    bad = [c for c in columns if not c or any(ch in c for ch in "\t\r\n")]
    if bad:
        raise ValueError(f"column labels may not be empty or hold tabs/newlines: {bad[:3]}")
    head = [
        _header_text(name),
        "version=1",
        f"nRows={time.size}",
        f"nColumns={len(columns) + 1}",
        f"inDegrees={'yes' if in_degrees else 'no'}",
        *(_header_text(d) for d in description),
        "endheader",
        "\t".join(["time", *columns]),
    ]
    row_fmt = "\t".join(["%.10g", *[_float_format(data.dtype)] * len(columns)])
    values = np.column_stack([time, data.astype(np.float64)]) if columns else time[:, None]
    body = (_fix_nonfinite(row_fmt % tuple(r)) for r in values)
    return _atomic_write(Path(path), head, body)


# --- .mot: kinematics in OpenSim's conventions -----------------------------------------------


def mot_table(
    ds: xr.Dataset,
    clip_id: str,
    variable: str | None = None,
    model: str | os.PathLike[str] | mujoco.MjModel | None = None,
) -> tuple[str, list[str], np.ndarray]:
    """The .mot columns of a clip: (variable used, labels, time × columns in degrees/metres)."""
    if variable is None:
        variable = next((v for v in MOT_SOURCES if v in ds.data_vars), None)
        if variable is None:
            raise ValueError(
                f"clip {clip_id!r} has no joint kinematics ({' or '.join(MOT_SOURCES)}) to export"
            )
    elif variable not in ds.data_vars or variable not in MOT_SOURCES:
        have = [v for v in MOT_SOURCES if v in ds.data_vars]
        raise ValueError(
            f"{variable!r} is not a kinematics variable of clip {clip_id!r}; "
            f"it has: {', '.join(have) or 'none'}"
        )
    qpos = ds[variable]
    if qpos.ndim != 2 or qpos.dims[0] != DIM_TIME:
        raise ValueError(f"{variable} of clip {clip_id!r} has dims {qpos.dims}, not (time, qpos)")
    labels = [str(x) for x in qpos[qpos.dims[1]].values]
    values = np.asarray(qpos.values, dtype=np.float64)
    mj = _resolve_model(ds, clip_id, model)
    kinds, root_quat0 = _joint_kinds(mj), _root_quat0(mj)

    columns: list[str] = []
    out: list[np.ndarray] = []
    root_done = False
    for joint, idx in _group_labels(labels).items():
        comps = tuple(labels[i].partition(":")[2] for i in idx)
        block = values[:, idx]
        if comps == FREE_SUFFIXES:
            # The first free joint is the root (OpenSim's pelvis); any other keeps its name.
            prefix = "pelvis" if not root_done else joint
            angles, trans = root_to_opensim(block[:, :3], block[:, 3:], root_quat0.get(joint))
            columns += [f"{prefix}_{n.removeprefix('pelvis_')}" for n in ROOT_COLUMNS]
            out += [angles, trans]
            root_done = True
        elif comps == BALL_SUFFIXES:
            columns += [f"{joint}_rx", f"{joint}_ry", f"{joint}_rz"]
            out.append(_euler(block, "XYZ"))
        elif comps == ("",):
            kind = kinds.get(joint)
            if kind not in ("hinge", "slide"):
                raise ValueError(
                    f"qpos column {joint!r} of clip {clip_id!r} is not a hinge or slide joint of "
                    f"model {_model_label(mj)!r}; pass the clip's model"
                )
            columns.append(joint)
            out.append(np.degrees(block) if kind == "hinge" else block)
        else:
            raise ValueError(f"clip {clip_id!r}: cannot read qpos columns of joint {joint!r}")
    return variable, columns, np.column_stack(out)


def root_to_opensim(
    position: np.ndarray, quat_wxyz: np.ndarray, neutral_wxyz: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """A MuJoCo free root → (pelvis tilt, list, rotation in degrees; tx, ty, tz in metres).

    Angles: intrinsic Z-X-Y Euler angles, in OpenSim axes, of the rotation from the neutral root
    orientation (`neutral_wxyz`, the model's qpos0) to each frame's, unwrapped over time so a turn
    past 180° stays continuous. NaN rows stay NaN.
    """
    position = np.asarray(position, dtype=np.float64)
    quat = np.asarray(quat_wxyz, dtype=np.float64)
    neutral = np.array([1.0, 0.0, 0.0, 0.0]) if neutral_wxyz is None else neutral_wxyz
    rot = _matrices(quat) @ _matrices(np.asarray(neutral, np.float64)[None])[0].T
    c = MUJOCO_TO_OPENSIM
    rot_os = c @ rot @ c.T
    angles = np.full((quat.shape[0], 3), np.nan)
    ok = np.isfinite(rot_os).all(axis=(1, 2))
    if ok.any():
        from scipy.spatial.transform import Rotation

        angles[ok] = Rotation.from_matrix(rot_os[ok]).as_euler("ZXY", degrees=True)
    return _unwrap_deg(angles), position @ c.T


def _resolve_model(
    ds: xr.Dataset, clip_id: str, model: str | os.PathLike[str] | mujoco.MjModel | None
) -> mujoco.MjModel:
    import mujoco

    from msconvert.emulator.model import DEFAULT_MODEL, load_model

    if isinstance(model, mujoco.MjModel):
        return model
    if model is not None:
        return load_model(Path(model))
    name = str(ds.attrs.get("model_name", ""))
    if name != DEFAULT_MODEL:
        raise ValueError(
            f"clip {clip_id!r} was converted with model {name or '(unknown)'!r}: pass its MJCF "
            "(--model) so hinge angles (to degrees) can be told from slides (metres)"
        )
    return load_model()


def _joint_kinds(model: mujoco.MjModel) -> dict[str, str]:
    import mujoco

    names = {
        int(mujoco.mjtJoint.mjJNT_FREE): "free",
        int(mujoco.mjtJoint.mjJNT_BALL): "ball",
        int(mujoco.mjtJoint.mjJNT_SLIDE): "slide",
        int(mujoco.mjtJoint.mjJNT_HINGE): "hinge",
    }
    return {model.joint(j).name: names[int(model.jnt_type[j])] for j in range(model.njnt)}


def _root_quat0(model: mujoco.MjModel) -> dict[str, np.ndarray]:
    import mujoco

    free = int(mujoco.mjtJoint.mjJNT_FREE)
    adr = model.jnt_qposadr
    return {
        model.joint(j).name: np.array(model.qpos0[adr[j] + 3 : adr[j] + 7])
        for j in range(model.njnt)
        if int(model.jnt_type[j]) == free
    }


def _model_label(model: mujoco.MjModel) -> str:
    from msconvert.emulator.model import model_name

    return model_name(model)


def _group_labels(labels: Sequence[str]) -> dict[str, list[int]]:
    """Column indices per joint: 'root:x'... group under 'root'; plain names stand alone."""
    groups: dict[str, list[int]] = {}
    for i, label in enumerate(labels):
        groups.setdefault(label.partition(":")[0], []).append(i)
    return groups


def _matrices(quat_wxyz: np.ndarray) -> np.ndarray:
    """Rotation matrices of (possibly unnormalized, possibly NaN) w,x,y,z quaternions."""
    q = quat_wxyz / np.linalg.norm(quat_wxyz, axis=-1, keepdims=True)
    w, x, y, z = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
    return np.stack(
        [
            np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
            np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
            np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
        ],
        -2,
    )


def _euler(quat_wxyz: np.ndarray, seq: str) -> np.ndarray:
    rot = _matrices(np.asarray(quat_wxyz, np.float64))
    out = np.full((rot.shape[0], 3), np.nan)
    ok = np.isfinite(rot).all(axis=(1, 2))
    if ok.any():
        from scipy.spatial.transform import Rotation

        out[ok] = Rotation.from_matrix(rot[ok]).as_euler(seq, degrees=True)
    return _unwrap_deg(out)


def _unwrap_deg(angles: np.ndarray) -> np.ndarray:
    """Continuous angles over time (as OpenSim's IK writes them), not wrapped at ±180°."""
    out = angles.copy()
    for k in range(angles.shape[1]):
        ok = np.isfinite(angles[:, k])
        out[ok, k] = np.unwrap(angles[ok, k], period=360.0)
    return out


def _export_mot(
    ds: xr.Dataset,
    clip_id: str,
    prefix: Path,
    fields: Sequence[str] | None,
    model: str | os.PathLike[str] | mujoco.MjModel | None,
) -> Path:
    if isinstance(fields, str):
        fields = fields.split(",")
    names = [f.strip() for f in fields or () if f.strip()]
    if len(names) > 1:
        raise ValueError(f"mot takes one kinematics field, got {', '.join(names)}")
    variable, columns, values = mot_table(ds, clip_id, names[0] if names else None, model)
    what = MOT_SOURCES[variable]
    description = [
        f"msconvert clip {clip_id}: {what} ({variable}); hinge angles in degrees, slides in metres",
        "pelvis_tilt, pelvis_list, pelvis_rotation: intrinsic Z-X-Y Euler angles (degrees) of the "
        "root from the model's neutral orientation, in OpenSim axes X forward, Y up, Z right",
        "pelvis_tx, pelvis_ty, pelvis_tz: root position (m) in those axes; MuJoCo world x, y, z "
        "are OpenSim -Z, -X, Y",
    ]
    return write_sto(
        prefix.with_name(prefix.name + ".mot"),
        f"{clip_id} {what} ({variable})",
        columns,
        ds[DIM_TIME].values,
        values,
        in_degrees=True,
        description=description,
    )


# --- .sto and .csv: wide tables over time ----------------------------------------------------


def _sto_defaults(ds: xr.Dataset) -> list[str]:
    return [name for name in STO_DEFAULT_FIELDS if name in ds.data_vars]


def _export_sto(arr: xr.DataArray, clip_id: str, name: str, prefix: Path) -> Path:
    time_dim, columns, values = _wide(arr)
    units = arr.attrs.get("units")
    description = [f"msconvert clip {clip_id}: {name}" + (f" [{units}]" if units else "")]
    return write_sto(
        prefix.with_name(f"{prefix.name}_{name}.sto"),
        f"{clip_id} {name}",
        columns,
        arr[time_dim].values,
        values,
        in_degrees=False,
        description=description,
    )


def _export_csv(arr: xr.DataArray, name: str, prefix: Path) -> Path:
    time_dim, columns, values = _wide(arr)
    path = prefix.with_name(f"{prefix.name}_{name}.csv")
    if values.dtype.kind == "b":
        values = values.astype(np.int8)
    cell = "%d" if values.dtype.kind in "iu" else _float_format(values.dtype)
    row_fmt = ",".join(["%.10g", *[cell] * len(columns)])
    times = np.asarray(arr[time_dim].values, dtype=np.float64)
    head = _csv_line(["time", *columns])
    body = (_fix_nonfinite(row_fmt % (t, *r)) for t, r in zip(times, values.tolist(), strict=True))
    return _atomic_write(path, [head], body)


def _wide(arr: xr.DataArray) -> tuple[str, list[str], np.ndarray]:
    """(time dim, one label per column, time × columns values) of a time-first array."""
    time_dim, rest = arr.dims[0], arr.dims[1:]
    if not rest:
        return str(time_dim), [str(arr.name)], np.asarray(arr.values).reshape(-1, 1)
    grids = [_labels(arr, d) for d in rest]
    columns = [
        ".".join(grids[i][k] for i, k in enumerate(combo)) for combo in np.ndindex(*arr.shape[1:])
    ]
    return str(time_dim), columns, np.asarray(arr.values).reshape(arr.shape[0], -1)


def _labels(arr: xr.DataArray, dim: str) -> list[str]:
    if dim in arr.coords:
        return [str(v) for v in arr.coords[dim].values]
    return [str(i) for i in range(arr.sizes[dim])]


# --- .npz: every array with its labels ---------------------------------------------------------


def _export_npz(ds: xr.Dataset, clip_id: str, prefix: Path, fields: Sequence[str] | None) -> Path:
    names = _select(ds, clip_id, fields, [str(n) for n in ds.data_vars], time_first=False)
    arrays: dict[str, np.ndarray] = {
        "__clip__": np.array(clip_id),
        "__attrs__": np.array(json.dumps(_json_attrs(ds.attrs), allow_nan=True)),
    }
    for name in names:
        arr = ds[name]
        values = np.asarray(arr.values)
        if values.dtype.kind not in "biufcU":
            values = values.astype(str)
        arrays[name] = values
        arrays[f"{name}__dims"] = np.array([str(d) for d in arr.dims])
        if "units" in arr.attrs:
            arrays[f"{name}__units"] = np.array(str(arr.attrs["units"]))
        for dim in arr.dims:
            if dim in arrays:
                continue
            if dim in ds.coords:
                labels = np.asarray(ds.coords[dim].values)
                arrays[str(dim)] = labels.astype(str) if labels.dtype.kind in "OSU" else labels
            else:
                arrays[str(dim)] = np.arange(ds.sizes[dim])
    path = prefix.with_name(prefix.name + ".npz")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part.npz")
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, path)
    return path


def _json_attrs(attrs: dict[str, Any]) -> dict[str, Any]:
    def plain(v: Any) -> Any:
        if isinstance(v, dict):
            return {str(k): plain(x) for k, x in v.items()}
        if isinstance(v, list | tuple | np.ndarray):
            return [plain(x) for x in (v.tolist() if isinstance(v, np.ndarray) else v)]
        if isinstance(v, np.generic):
            return v.item()
        return v if isinstance(v, str | int | float | bool) or v is None else str(v)

    return plain(dict(attrs))


# --- shared helpers ----------------------------------------------------------------------------


def _prefix(out: Path, clip_id: str, fmt: str) -> Path:
    """The path prefix files are named from (see the module docstring)."""
    if out.is_dir():
        return out / clip_id.strip("/").replace("/", "_")
    if out.suffix.lower() == f".{fmt}":
        return out.with_suffix("")
    if not out.name:
        raise ValueError(f"export path {str(out)!r} has no file name")
    return out


def _select(
    ds: xr.Dataset,
    clip_id: str,
    fields: Sequence[str] | None,
    default: list[str],
    *,
    time_first: bool,
) -> list[str]:
    if fields is None:
        names = default
        if not names:
            raise ValueError(f"clip {clip_id!r} has none of the default fields to export")
    else:
        if isinstance(fields, str):
            fields = fields.split(",")
        names = list(dict.fromkeys(f.strip() for f in fields if f.strip()))
        if not names:
            raise ValueError("no fields given")
        missing = [n for n in names if n not in ds.data_vars]
        if missing:
            have = ", ".join(sorted(str(n) for n in ds.data_vars))
            raise ValueError(f"clip {clip_id!r} has no field {', '.join(missing)}; it has: {have}")
    if time_first:
        untimed = [n for n in names if not ds[n].dims or not is_time_dim(str(ds[n].dims[0]))]
        if untimed:
            raise ValueError(
                f"field {', '.join(untimed)} of clip {clip_id!r} is not a time series "
                "(a table needs time as the first dimension; use npz)"
            )
    return names


def _split(line: str) -> list[str]:
    """OpenSim writes tabs; older files and hand edits may use spaces."""
    return [t.strip() for t in line.split("\t")] if "\t" in line else line.split()


_NAN_WORDS = {"nan", "-nan", "+nan", "-nan(ind)", "nan(ind)", "1.#qnan", "-1.#ind"}


def _number(token: str) -> float:
    return float("nan") if token.lower() in _NAN_WORDS else float(token)


def _float_format(dtype: np.dtype) -> str:
    # Enough significant digits to get float32 values back exactly; float64 to ~1e-15.
    return "%.9g" if np.dtype(dtype).itemsize <= 4 else "%.15g"


_NONFINITE = re.compile(r"\b(nan|inf)\b")


def _fix_nonfinite(line: str) -> str:
    """'NaN' and 'Inf' as OpenSim (and pandas, numpy) read them; Python writes 'nan'/'inf'."""
    if "n" not in line:  # fast path: finite numbers never contain an 'n'
        return line
    return _NONFINITE.sub(lambda m: "NaN" if m.group(1) == "nan" else "Inf", line)


def _header_text(text: str) -> str:
    """One header line OpenSim will not read as 'key=value' or as the end of the header."""
    text = " ".join(str(text).replace("=", ":").split())
    return text if text and text != "endheader" else f"({text or 'untitled'})"


def _csv_line(cells: Sequence[str]) -> str:
    class _Line:
        value = ""

        def write(self, s: str) -> None:
            self.value += s

    line = _Line()
    csv.writer(line, lineterminator="").writerow(cells)
    return line.value


def _atomic_write(path: Path, head: Iterable[str], body: Iterable[str]) -> Path:
    """Write lines to a temporary file beside `path`, then rename: never a half-written export."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    with tmp.open("w", encoding="utf-8", newline="\n") as f:
        for line in head:
            f.write(line + "\n")
        for line in body:
            f.write(line + "\n")
    os.replace(tmp, path)
    return path
