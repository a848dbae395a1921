"""Imports point one way: a lower layer never imports a higher one (lazy imports included).

    convert  ->  catalog, emulator, datasets, msconvert (the root package)
    emulator ->  datasets, msconvert
    datasets ->  msconvert          catalog -> msconvert
Inside emulator the flow is: model (and the values and solvers it needs) -> retarget ->
model_info, backends -> muscles -> learn (training, and the rollout that emulates a policy).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"msconvert": "msconvert", "datasets": "datasets", "catalog": "catalog"}
PACKAGES |= {"emulator": "emulator", "convert": "convert"}
ALLOWED = {
    "msconvert": {"msconvert"},
    "datasets": {"msconvert", "datasets"},
    "catalog": {"msconvert", "catalog"},
    "emulator": {"msconvert", "datasets", "emulator"},
    "convert": {"msconvert", "datasets", "catalog", "emulator", "convert"},
}
# Ranks inside emulator/, by the path under it: a module may import only ranks <= its own.
EMULATOR_RANKS = {
    "emulation": 0,
    "model": 0,
    "qp": 0,
    "parallel": 0,
    "retarget": 1,
    "model_info": 2,
    "backends": 2,
    "muscles": 3,
    "learn": 4,
}


def _layer(module: str) -> str:
    """'msconvert.emulator.learn.env' -> 'emulator'; 'msconvert.clip_ids' -> 'msconvert'."""
    parts = module.split(".")
    return (
        parts[1]
        if len(parts) > 1 and parts[1] in PACKAGES and parts[1] != "msconvert"
        else "msconvert"
    )


def _emulator_rank(module: str) -> int:
    """A module's rank; the package's own __init__ sits on top (it may name anything)."""
    if module.count(".") < 2:
        return max(EMULATOR_RANKS.values())
    return EMULATOR_RANKS[module.split(".")[2]]


def _sources() -> list[tuple[str, Path]]:
    found = []
    for folder in PACKAGES.values():
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT / folder).with_suffix("")
            if rel.name == "__main__":
                continue  # the console entry point sits on top of everything
            parts = [p for p in rel.parts if p != "__init__"]
            prefix = ["msconvert"] if folder == "msconvert" else ["msconvert", folder]
            found.append((".".join(prefix + parts), path))
    return found


def _imports(path: Path, module: str) -> list[str]:
    """Every msconvert module the file imports, at the top or inside functions."""
    out = []
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the package
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                name = f"{base}.{node.module}" if node.module else base
            else:
                name = node.module or ""
            out += [name] if node.module or node.level else []
            out += [f"{name}.{a.name}" for a in node.names]
    return [m for m in out if m == "msconvert" or m.startswith("msconvert.")]


SOURCES = _sources()


def test_every_package_folder_is_scanned():
    assert len(SOURCES) > 40
    assert all(_layer(m) in ALLOWED for m, _ in SOURCES)


@pytest.mark.parametrize("module,path", SOURCES, ids=[m for m, _ in SOURCES])
def test_imports_point_one_way(module, path):
    layer = _layer(module)
    wrong = []
    for target in _imports(path, module):
        if _layer(target) not in ALLOWED[layer]:
            wrong.append(f"{target} ({_layer(target)})")
        elif layer == "emulator" and _layer(target) == "emulator" and target.count(".") >= 2:
            part = target.split(".")[2]
            if part in EMULATOR_RANKS and EMULATOR_RANKS[part] > _emulator_rank(module):
                wrong.append(f"{target} (emulator rank {EMULATOR_RANKS[part]})")
    assert not wrong, f"{module} ({layer}) imports a higher layer: {', '.join(sorted(set(wrong)))}"


def test_the_layer_check_catches_a_wrong_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from msconvert.convert.cli import main\n")
    found = _imports(bad, "msconvert.datasets.bad")
    assert "msconvert.convert.cli" in found and _layer(found[0]) == "convert"
    assert "convert" not in ALLOWED["datasets"]


def test_retargeting_and_static_optimization_never_import_training():
    """A worker that retargets and solves static optimization (or tracks) never pays for JAX,
    flax, optax or orbax (~3 s of every worker process's start-up), nor for scipy.signal (~1 s):
    the pipeline imports training where the rl method runs."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "import msconvert.convert.pipeline, msconvert.convert.executors\n"
        "import msconvert.emulator.muscles.static_opt, msconvert.emulator.muscles.track\n"
        "heavy = ('jax', 'flax', 'optax', 'orbax', 'scipy.signal', 'torch')\n"
        "print(' '.join(m for m in heavy if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == []


def test_training_errors_count_as_clip_errors_once_training_is_loaded():
    from msconvert.convert.pipeline import CLIP_ERRORS, clip_errors
    from msconvert.emulator.learn.checkpoint import CheckpointError
    from msconvert.emulator.learn.train import TrainError

    assert TrainError not in CLIP_ERRORS
    assert {TrainError, CheckpointError} <= set(clip_errors())
