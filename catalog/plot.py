"""One overview picture of a catalog clip: muscle activity, chosen muscles, tracking, floor forces.

    plot_clip(catalog[clip_id], clip_id, "walk.png")

Rendered with Matplotlib's Agg canvas on a private Figure (no pyplot, no GUI, no global state), so
it works headless, in threads and in worker processes.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import xarray as xr

from msconvert.catalog.schema import DIM_TIME
from msconvert.dims import DIM_SOLUTION, select_solution, solution_count

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

FIGSIZE_IN = (14.0, 10.0)
DPI = 110
SUFFIXES = (".png", ".pdf", ".svg")
MISSING = "not in this clip"
MAX_TRACES = 8
MAX_OVERLAID_MUSCLES = 4  # solutions overlaid: a colour per muscle, a line style per solution
SOLUTION_STYLES = ("-", "--", ":", "-.")
# Default traces: large leg muscles, by name pattern (matched on the name without its side).
DEFAULT_TRACE_PATTERNS = (
    ("soleus", (r"^sol(eus)?$", r"^sol")),
    ("gastrocnemius", (r"^gas(troc(nemius)?)?_?med", r"^med_?gas", r"^gas")),
    ("vastus", (r"^vas(tus)?_?lat", r"^vas")),
    ("gluteus maximus", (r"^gl(ut(eus)?)?_?max",)),
    ("tibialis anterior", (r"^tib(ialis)?_?ant",)),
)
SIDE_ORDER = ("right", "left", "unsided")
_SIDE_SUFFIX = re.compile(r"(?i)[_\-.](r|l|right|left)$")


@dataclass(frozen=True)
class MuscleGroup:
    """A run of rows in the heatmap: muscles of one side sharing a name prefix."""

    side: str  # 'right', 'left' or 'unsided'
    prefix: str
    start: int  # first row (in the sorted order)
    stop: int  # one past the last row


def plot_clip(
    ds: xr.Dataset,
    clip_id: str,
    out: str | os.PathLike[str],
    muscles: Sequence[str] | None = None,
    *,
    solution: int | None = None,
    solutions: int = 1,
) -> Path:
    """Draw the clip's overview figure to `out` (.png, or .pdf/.svg) and return its path.

    Panels: activation heatmap of every muscle grouped by side and name prefix; activation of
    `muscles` (default: large leg muscles found by name); tracking error; vertical ground
    reaction force per foot. A panel whose arrays the clip lacks says so. Of a clip with
    distinct muscle solutions, the panels show `solution` (None: 0), and `solutions` > 1
    overlays the first that many solutions' activations of the chosen muscles. Unknown muscle
    names raise KeyError; a bad file suffix or a solution the clip lacks raises ValueError.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(out)
    if not path.suffix:
        path = path.with_suffix(".png")
    if path.suffix.lower() not in SUFFIXES:
        raise ValueError(f"plot file {str(path)!r} must end in {', '.join(SUFFIXES)}")
    every_solution = ds
    ds = select_solution(ds, solution, clip_id)
    count = solution_count(every_solution)
    if solutions > count:
        raise ValueError(
            f"clip {clip_id!r} holds {count} muscle solution{'s' if count > 1 else ''}: "
            f"cannot overlay {solutions}"
        )
    muscle_names = _muscle_names(ds)
    # Asked-for muscles are checked even when the clip has none (a retarget-only clip).
    chosen = choose_muscles(ds, clip_id, muscles) if muscle_names or muscles else []

    fig = Figure(figsize=FIGSIZE_IN, dpi=DPI)
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(
        3, 2, width_ratios=(1.45, 1.0), left=0.085, right=0.935, top=0.9, bottom=0.065,
        wspace=0.28, hspace=0.5,
    )  # fmt: skip
    _heatmap(fig, fig.add_subplot(grid[:, 0]), ds)
    if solutions > 1:
        _overlaid(fig.add_subplot(grid[0, 1]), every_solution, chosen, solutions)
    else:
        _traces(fig.add_subplot(grid[0, 1]), ds, chosen)
    _tracking(fig.add_subplot(grid[1, 1]), ds)
    _grf(fig.add_subplot(grid[2, 1]), ds)
    _title(fig, ds, clip_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part" + path.suffix)
    fig.savefig(tmp, dpi=DPI)
    os.replace(tmp, path)
    return path


def choose_muscles(ds: xr.Dataset, clip_id: str, muscles: Sequence[str] | None = None) -> list[str]:
    """The muscles to trace: those asked for (checked), else large leg muscles present by name,
    else the most active muscles."""
    names = _muscle_names(ds)
    if muscles is not None:
        if isinstance(muscles, str):
            muscles = muscles.split(",")
        asked = list(dict.fromkeys(m.strip() for m in muscles if m.strip()))
        missing = [m for m in asked if m not in names]
        if missing:
            hints = difflib.get_close_matches(missing[0], names, n=3)
            hint = f"; did you mean {', '.join(hints)}?" if hints else ""
            raise KeyError(f"clip {clip_id!r} has no muscle {', '.join(missing)}{hint}")
        if not asked:
            raise KeyError("no muscle names given")
        return asked
    sides = muscle_sides(names)
    chosen: list[str] = []
    for _, patterns in DEFAULT_TRACE_PATTERNS:
        pick = _first_match(names, sides, patterns)
        if pick is not None and pick not in chosen:
            chosen.append(pick)
    if chosen:
        return chosen
    # No human leg muscle names (another model): show the most active muscles instead.
    field = _muscle_field(ds)
    if field is None:
        return names[:5]
    mean = np.nanmean(np.asarray(ds[field].transpose(DIM_TIME, "muscle").values, float), axis=0)
    return [names[i] for i in np.argsort(-np.nan_to_num(mean, nan=-1.0))[:5]]


def muscle_sides(names: Sequence[str]) -> list[str]:
    """'right', 'left' or 'unsided' per muscle, from a side suffix (_r, _l, _right, _left).

    A name without a suffix whose mirror exists with one ('DELT1' beside 'DELT1_left') takes
    the other side, as models that suffix only their left copies expect.
    """
    present = set(names)
    out = []
    for name in names:
        m = _SIDE_SUFFIX.search(name)
        if m:
            out.append("right" if m.group(1).lower() in ("r", "right") else "left")
        elif any(f"{name}{s}" in present for s in ("_left", "_l", "_L")):
            out.append("right")
        elif any(f"{name}{s}" in present for s in ("_right", "_r", "_R")):
            out.append("left")
        else:
            out.append("unsided")
    return out


def muscle_order(names: Sequence[str]) -> tuple[np.ndarray, list[MuscleGroup]]:
    """Heatmap row order: by side (right, left, unsided), then name-prefix groups in order of
    first appearance (models list muscles by region), then natural name order; and the groups."""
    sides = muscle_sides(names)
    prefixes = [_prefix(n) for n in names]
    first_seen: dict[str, int] = {}
    for i, p in enumerate(prefixes):
        first_seen.setdefault(p.lower(), i)

    def key(i: int) -> tuple:
        return (SIDE_ORDER.index(sides[i]), first_seen[prefixes[i].lower()], _natural(names[i]))

    order = np.array(sorted(range(len(names)), key=key), dtype=int)
    groups: list[MuscleGroup] = []
    for row, i in enumerate(order):
        side, prefix = sides[i], prefixes[i]
        last = groups[-1] if groups else None
        if last and last.side == side and last.prefix.lower() == prefix.lower():
            groups[-1] = MuscleGroup(side, last.prefix, last.start, row + 1)
        else:
            groups.append(MuscleGroup(side, prefix, row, row + 1))
    return order, groups


# --- panels ----------------------------------------------------------------------------------


def _heatmap(fig: Figure, ax: Axes, ds: xr.Dataset) -> None:
    ax.set_title("Muscle activation, all muscles", loc="left", fontsize=11)
    if "activation" not in ds.data_vars:
        _missing(ax, "activation")
        return
    act = ds["activation"].transpose(DIM_TIME, "muscle")
    names = [str(n) for n in act["muscle"].values]
    order, groups = muscle_order(names)
    values = np.asarray(act.values, dtype=float)[:, order].T
    t = np.asarray(act[DIM_TIME].values, dtype=float)
    half = 0.5 * (float(np.median(np.diff(t))) if t.size > 1 else 1.0)
    import matplotlib as mpl

    cmap = mpl.colormaps["viridis"].with_extremes(bad="0.75")
    image = ax.imshow(
        np.ma.masked_invalid(values),
        aspect="auto",
        interpolation="nearest",
        cmap=cmap,
        vmin=0.0,
        vmax=1.0,
        extent=(t[0] - half, t[-1] + half, len(names) - 0.5, -0.5),
    )
    bar = fig.colorbar(image, ax=ax, fraction=0.035, pad=0.065)
    bar.set_label("activation (0–1)", fontsize=10)
    ax.set_xlabel("time (s)", fontsize=10)
    ax.set_ylabel(f"muscles by side and name group ({len(names)})", fontsize=10, labelpad=4)

    for g in groups[1:]:
        side_change = g.side != groups[groups.index(g) - 1].side
        ax.axhline(g.start - 0.5, color="white", lw=1.6 if side_change else 0.25, alpha=0.9)
    ticks, labels = _group_ticks(fig, ax, groups)
    ax.set_yticks(ticks, labels, fontsize=6.5)
    ax.tick_params(axis="y", length=2, pad=1)

    # Side names on the right edge, one per side block.
    spans: dict[str, list[int]] = {}
    for g in groups:
        spans.setdefault(g.side, [g.start, g.stop])[1] = g.stop
    side_axis = ax.secondary_yaxis("right")
    side_axis.set_yticks(
        [(a + b - 1) / 2 for a, b in spans.values()],
        [f"{s} ({b - a})" for s, (a, b) in spans.items()],
        rotation=90,
        va="center",
        fontsize=9,
    )
    side_axis.tick_params(length=0)


def _group_ticks(fig: Figure, ax: Axes, groups: list[MuscleGroup]) -> tuple[list[float], list[str]]:
    """A label per group where it fits: the largest groups first, never two closer than a line."""
    n = max(g.stop for g in groups)
    height_px = ax.get_position().height * fig.get_figheight() * fig.dpi
    min_rows = 10.5 * n / max(height_px, 1.0)  # 6.5 pt labels need about 10 px each
    placed: list[tuple[float, str]] = []
    for g in sorted(groups, key=lambda g: -(g.stop - g.start)):
        centre = (g.start + g.stop - 1) / 2
        if all(abs(centre - c) >= min_rows for c, _ in placed):
            placed.append((centre, g.prefix))
    placed.sort()
    return [c for c, _ in placed], [p for _, p in placed]


def _traces(ax: Axes, ds: xr.Dataset, chosen: list[str]) -> None:
    field = _muscle_field(ds)
    what = "excitation" if field == "excitation" else "activation"
    ax.set_title(f"Muscle {what}, selected muscles", loc="left", fontsize=11)
    if field is None or not chosen:
        _missing(ax, "muscle activation")
        return
    arr = ds[field].transpose(DIM_TIME, "muscle")
    t = np.asarray(arr[DIM_TIME].values, dtype=float)
    for name in chosen[:MAX_TRACES]:
        ax.plot(t, np.asarray(arr.sel(muscle=name).values, dtype=float), lw=1.4, label=name)
    if len(chosen) > MAX_TRACES:
        ax.text(0.99, 0.02, f"first {MAX_TRACES} of {len(chosen)} shown", transform=ax.transAxes,
                ha="right", va="bottom", fontsize=8)  # fmt: skip
    ax.set_ylim(-0.02, 1.3)  # headroom above 1 for the legend
    ax.set_yticks(np.linspace(0.0, 1.0, 6))
    if t.size > 1:
        ax.set_xlim(t[0], t[-1])
    ax.set_xlabel("time (s)")
    ax.set_ylabel(f"{what} (0–1)")
    ax.legend(fontsize=8, ncol=min(len(chosen), 4), loc="upper right", framealpha=0.85)
    ax.grid(alpha=0.3)


def _overlaid(ax: Axes, ds: xr.Dataset, chosen: list[str], solutions: int) -> None:
    """The first `solutions` muscle solutions' activations of the chosen muscles: a colour
    per muscle, a line style per solution, so that where they share the work differently shows."""
    field = _muscle_field(ds)
    ax.set_title(
        f"Muscle activation, solutions 0-{solutions - 1} overlaid", loc="left", fontsize=11
    )
    if field is None or not chosen:
        _missing(ax, "muscle activation")
        return
    arr = ds[field].transpose(DIM_SOLUTION, DIM_TIME, "muscle")
    t = np.asarray(arr[DIM_TIME].values, dtype=float)
    shown = chosen[:MAX_OVERLAID_MUSCLES]
    for k, name in enumerate(shown):
        values = np.asarray(arr.sel(muscle=name).values, dtype=float)
        for j in range(solutions):
            style = SOLUTION_STYLES[j % len(SOLUTION_STYLES)]
            ax.plot(t, values[j], color=f"C{k}", ls=style, lw=1.3, alpha=1.0 if j == 0 else 0.8)
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=f"C{k}", lw=1.6, label=n) for k, n in enumerate(shown)]
    handles += [
        Line2D([], [], color="0.3", ls=SOLUTION_STYLES[j % len(SOLUTION_STYLES)], lw=1.3,
               label=f"solution {j}")
        for j in range(solutions)
    ]  # fmt: skip
    if len(chosen) > MAX_OVERLAID_MUSCLES:
        ax.text(0.99, 0.02, f"first {MAX_OVERLAID_MUSCLES} of {len(chosen)} shown",
                transform=ax.transAxes, ha="right", va="bottom", fontsize=8)  # fmt: skip
    ax.set_ylim(-0.02, 1.3)  # headroom above 1 for the legend
    ax.set_yticks(np.linspace(0.0, 1.0, 6))
    if t.size > 1:
        ax.set_xlim(t[0], t[-1])
    ax.set_xlabel("time (s)")
    ax.set_ylabel("activation (0–1)")
    ax.legend(handles=handles, fontsize=8, ncol=4, loc="upper right", framealpha=0.85)
    ax.grid(alpha=0.3)


def _tracking(ax: Axes, ds: xr.Dataset) -> None:
    if "tracking_joint_error_deg" in ds.data_vars:
        ax.set_title("Tracking error of the emulation (mean over joints)", loc="left", fontsize=11)
        err = ds["tracking_joint_error_deg"]
        t = np.asarray(err[DIM_TIME].values, dtype=float)
        lines = ax.plot(t, np.asarray(err.values, float), color="C0", lw=1.4, label="joint angle")
        ax.set_ylabel("joint-angle error (deg)", color="C0")
        if "tracking_body_error_mm" in ds.data_vars:
            twin = ax.twinx()
            body = np.asarray(ds["tracking_body_error_mm"].values, float)
            lines += twin.plot(t, body, color="C3", lw=1.2, label="key-body position")
            twin.set_ylabel("key-body error (mm)", color="C3")
            twin.set_ylim(0, _headroom(body))
        ax.legend(lines, [ln.get_label() for ln in lines], fontsize=8, ncol=2, loc="upper right",
                  framealpha=0.85)  # fmt: skip
        ax.set_ylim(0, _headroom(err.values))
    elif "retarget_position_error" in ds.data_vars:
        ax.set_title(
            "Retargeting error (no emulation tracking in this clip)", loc="left", fontsize=11
        )
        err = ds["retarget_position_error"].transpose(DIM_TIME, ...)
        t = np.asarray(err[DIM_TIME].values, dtype=float)
        mm = 1000.0 * np.asarray(err.values, dtype=float).reshape(t.size, -1)
        worst = _nan_reduce(np.nanmax, mm)
        ax.plot(t, _nan_reduce(np.nanmean, mm), color="C0", lw=1.4, label="mean over points")
        ax.plot(t, worst, color="C0", lw=0.9, ls=":", label="worst point")
        ax.set_ylabel("model-to-source distance (mm)")
        ax.legend(fontsize=8, ncol=2, loc="upper right", framealpha=0.85)
        ax.set_ylim(0, _headroom(worst))
    else:
        ax.set_title("Tracking error", loc="left", fontsize=11)
        _missing(ax, "tracking error")
        return
    ax.set_xlabel("time (s)")
    ax.grid(alpha=0.3)


def _grf(ax: Axes, ds: xr.Dataset) -> None:
    ax.set_title("Vertical ground reaction force", loc="left", fontsize=11)
    if "grf" not in ds.data_vars or "foot" not in ds["grf"].dims:
        _missing(ax, "ground reaction force")
        return
    grf = ds["grf"]
    vertical = (
        grf.sel(xyz="z") if "xyz" in grf.coords else grf.isel({grf.dims[-1]: -1})
    ).transpose(DIM_TIME, "foot")
    t = np.asarray(vertical[DIM_TIME].values, dtype=float)
    values = np.asarray(vertical.values, dtype=float)
    feet = [str(f) for f in vertical["foot"].values]
    colors = {"left": "C0", "right": "C3"}
    for k, foot in enumerate(feet):
        ax.plot(t, values[:, k], lw=1.4, color=colors.get(foot, f"C{k + 4}"), label=foot)
    ax.plot(t, _nan_reduce(np.nansum, values), lw=1.0, color="0.35", ls="--", label="total")
    top = [values]
    weight = ds.attrs.get("body_weight_n")
    if isinstance(weight, int | float) and np.isfinite(weight):
        ax.axhline(float(weight), color="k", lw=1.0, ls=":", label=f"body weight ({weight:.0f} N)")
        top.append(np.array([weight]))
    top.append(_nan_reduce(np.nansum, values))
    ax.set_xlabel("time (s)")
    ax.set_ylabel("vertical force (N)")
    low = float(np.nanmin(np.where(np.isfinite(values), values, 0.0), initial=0.0))
    ax.set_ylim(min(0.0, low), _headroom(np.concatenate([np.ravel(a) for a in top])))
    ax.legend(fontsize=8, ncol=4, loc="upper right", framealpha=0.85)
    ax.grid(alpha=0.3)


def _title(fig: Figure, ds: xr.Dataset, clip_id: str) -> None:
    method = str(ds.attrs.get("method") or "unknown")
    fig.suptitle(f"{clip_id}    method: {method}", x=0.02, y=0.975, ha="left", fontsize=14)
    details = []
    if ds.attrs.get("method_label"):
        details.append(str(ds.attrs["method_label"]))
    if ds.attrs.get("model_name"):
        details.append(f"model {ds.attrs['model_name']}")
    if int(ds.attrs.get("solutions") or 1) > 1:  # a clip converted with --solutions K
        details.append(f"solution {ds.attrs.get('solution', 0)} of {ds.attrs['solutions']}")
    if DIM_TIME in ds.coords and ds.sizes[DIM_TIME] > 1:
        t = ds[DIM_TIME].values
        details.append(f"{float(t[-1] - t[0]):.2f} s, {t.size} frames")
    if details:
        fig.text(0.02, 0.937, " · ".join(details), ha="left", fontsize=9.5, color="0.25")


def _missing(ax: Axes, what: str) -> None:
    ax.text(0.5, 0.5, f"{what}: {MISSING}", transform=ax.transAxes, ha="center", va="center",
            fontsize=11, color="0.4")  # fmt: skip
    ax.set_xticks([])
    ax.set_yticks([])


# --- helpers ---------------------------------------------------------------------------------


def _muscle_names(ds: xr.Dataset) -> list[str]:
    return [str(n) for n in ds["muscle"].values] if "muscle" in ds.coords else []


def _muscle_field(ds: xr.Dataset) -> str | None:
    return next((f for f in ("activation", "excitation") if f in ds.data_vars), None)


def _first_match(names: Sequence[str], sides: Sequence[str], patterns: Sequence[str]) -> str | None:
    """The first name matching a pattern (earlier patterns first), right side preferred."""
    stems = [_SIDE_SUFFIX.sub("", n).lower() for n in names]
    for pattern in patterns:
        rx = re.compile(pattern)
        hits = [i for i, s in enumerate(stems) if rx.search(s)]
        for side in SIDE_ORDER:
            for i in hits:
                if sides[i] == side:
                    return names[i]
    return None


def _prefix(name: str) -> str:
    """The group a muscle belongs to: the leading letters of its name without the side."""
    stem = _SIDE_SUFFIX.sub("", name)
    m = re.match(r"[A-Za-z]+", stem)
    return m.group(0) if m else stem


def _natural(name: str) -> list[tuple[int, int | str]]:
    """Sort key putting 'IL_R10' after 'IL_R9'."""
    return [(0, int(p)) if p.isdigit() else (1, p.lower()) for p in re.split(r"(\d+)", name) if p]


def _headroom(values: np.ndarray, factor: float = 1.35) -> float:
    """An upper y limit leaving room for a legend above the data."""
    finite = np.asarray(values, dtype=float)
    finite = finite[np.isfinite(finite)]
    return float(finite.max()) * factor if finite.size and finite.max() > 0 else 1.0


def _nan_reduce(fn, values: np.ndarray) -> np.ndarray:  # a numpy nan-reduction
    """Row-wise nan-reduction that yields NaN, without a warning, for all-NaN rows."""
    out = np.full(values.shape[0], np.nan)
    ok = np.isfinite(values).any(axis=1)
    if ok.any():
        out[ok] = fn(values[ok], axis=1)
    return out
