"""Packaging: every package folder of the tree is in the wheel, under `msconvert.` (no build here).

The wheel itself is built, installed and run by `make wheel-check`, which also calls this file as
a script on the wheel it built (`python tests/test_packaging.py WHEEL`) to compare its contents
with what the tree says it must hold.
"""

from __future__ import annotations

import importlib.util
import re
import sys
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Where the installed packages live in the tree: msconvert/ and the four subpackage roots.
PACKAGE_ROOTS = {
    "msconvert": "msconvert",
    "msconvert.convert": "convert",
    "msconvert.emulator": "emulator",
    "msconvert.datasets": "datasets",
    "msconvert.catalog": "catalog",
}


def pyproject(root: Path = ROOT) -> dict:
    with open(root / "pyproject.toml", "rb") as f:
        return tomllib.load(f)


def package_folders(root: Path = ROOT) -> dict[str, Path]:
    """Installed package name -> folder, for every folder with an __init__.py under the roots."""
    folders: dict[str, Path] = {}
    for name, top in PACKAGE_ROOTS.items():
        for init in sorted((root / top).rglob("__init__.py")):
            rel = init.parent.relative_to(root / top)
            if any(part.startswith(".") for part in rel.parts):
                continue  # hidden folders (editor and tool caches) are never packages
            folders[".".join([name, *rel.parts])] = init.parent
    return folders


def package_data_files(root: Path = ROOT) -> dict[str, list[Path]]:
    """Package name -> the files its `[tool.setuptools.package-data]` globs match in the tree."""
    data = pyproject(root)["tool"]["setuptools"].get("package-data", {})
    folders = package_folders(root)
    return {
        name: sorted({f for p in patterns for f in folders[name].glob(p) if f.is_file()})
        for name, patterns in data.items()
    }


def expected_wheel_files(root: Path = ROOT) -> set[str]:
    """The paths (inside the wheel) of every module and data file the tree says must ship."""
    files: set[str] = set()
    for name, folder in package_folders(root).items():
        prefix = name.replace(".", "/")
        files.update(f"{prefix}/{py.name}" for py in folder.glob("*.py"))
    folders = package_folders(root)
    for name, paths in package_data_files(root).items():
        prefix = name.replace(".", "/")
        files.update(f"{prefix}/{p.relative_to(folders[name]).as_posix()}" for p in paths)
    return files


def _setup_module():  # the repository's setup.py, imported without running setup()
    spec = importlib.util.spec_from_file_location("msconvert_setup", ROOT / "setup.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- tests --------------------------------------------------------------------------------------


def test_package_dir_maps_the_roots() -> None:
    """The installed names map to the root folders, and no root package is left unmapped."""
    mapping = pyproject()["tool"]["setuptools"]["package-dir"]
    assert mapping == PACKAGE_ROOTS
    unmapped = [
        d.name
        for d in ROOT.iterdir()
        if d.is_dir() and (d / "__init__.py").is_file() and d.name not in mapping.values()
    ]
    assert not unmapped, f"root folders with an __init__.py not in package-dir: {unmapped}"


def test_packages_are_discovered_not_listed() -> None:
    """An explicit list in pyproject.toml would override setup.py's discovery (and go stale)."""
    tool = pyproject()["tool"]["setuptools"]
    assert "packages" not in tool and "py-modules" not in tool


def test_every_package_folder_is_discovered() -> None:
    """Each folder with an __init__.py under the roots is a package of the build, and no more.

    A folder below one without an __init__.py is not found by setuptools: add the missing
    __init__.py (the failure message names the folder).
    """
    expected = set(package_folders())
    assert "msconvert.emulator.learn.agents" in expected  # the one the old explicit list missed
    discovered = set(_setup_module().discover_packages(ROOT))
    assert not expected - discovered, f"package folders not in the build: {expected - discovered}"
    assert not discovered - expected, f"packages with no folder: {discovered - expected}"


def test_package_data_ships() -> None:
    """Every package-data key is a package, and each file in a package's data/ folder matches."""
    data = package_data_files()
    folders = package_folders()
    assert set(data) <= set(folders), "package-data names a package that is not discovered"
    assert data["msconvert.datasets"] and data["msconvert.emulator"]
    shipped = {p for paths in data.values() for p in paths}
    for folder in folders.values():
        for f in sorted((folder / "data").glob("*")):
            if f.is_file() and not f.name.startswith("."):
                assert f in shipped, f"{f.relative_to(ROOT)} is in a data/ folder but not shipped"


def test_build_floor_reads_the_license() -> None:
    """`license = "SPDX"` (PEP 639) needs setuptools >= 77.0.3; older ones reject pyproject.toml."""
    config = pyproject()
    (requirement,) = [r for r in config["build-system"]["requires"] if r.startswith("setuptools")]
    match = re.fullmatch(r"setuptools>=(\d+(?:\.\d+)*)", requirement.replace(" ", ""))
    assert match, f"setuptools requirement without a plain floor: {requirement}"
    floor = tuple(int(x) for x in match.group(1).split("."))
    if isinstance(config["project"].get("license"), str):
        assert floor >= (77, 0, 3)


# --- wheel contents (make wheel-check) ---------------------------------------------------------


def check_wheel(wheel: Path, root: Path = ROOT) -> list[str]:
    """The problems of a built wheel against the tree: missing or unexpected files."""
    with zipfile.ZipFile(wheel) as z:
        names = {n for n in z.namelist() if not n.endswith("/")}
    content = {n for n in names if ".dist-info/" not in n}
    expected = expected_wheel_files(root)
    problems = [f"missing from the wheel: {n}" for n in sorted(expected - content)]
    problems += [f"unexpected in the wheel: {n}" for n in sorted(content - expected)]
    return problems


if __name__ == "__main__":
    wheel = Path(sys.argv[1])
    found = check_wheel(wheel)
    for line in found:
        print(line)
    n_packages = len(package_folders())
    n_files = len(expected_wheel_files())
    print(
        f"{wheel.name}: {'FAILED' if found else 'ok'}, {n_packages} packages, {n_files} files "
        "(every module and data file of the tree, nothing else)"
    )
    sys.exit(1 if found else 0)
