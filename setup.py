"""The package list for setuptools, discovered rather than listed (everything else: pyproject.toml).

The subpackages sit at the repository root (convert/, emulator/, datasets/, catalog/) but install
under `msconvert.`. `[tool.setuptools.package-dir]` in pyproject.toml maps each installed name to
its folder; setuptools' declarative `packages.find` names packages after their folders and cannot
add that prefix, so this file walks every mapped folder with `find_packages` and prefixes what it
finds. A new folder with an `__init__.py` anywhere below a mapped folder ships without editing
anything (tests/test_packaging.py checks this).
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).resolve().parent


def package_dir(pyproject: Path = HERE / "pyproject.toml") -> dict[str, str]:
    """`[tool.setuptools.package-dir]` of pyproject.toml: installed package name -> folder."""
    with open(pyproject, "rb") as f:
        return dict(tomllib.load(f)["tool"]["setuptools"]["package-dir"])


def discover_packages(root: Path = HERE, mapping: dict[str, str] | None = None) -> list[str]:
    """Every installed package name: each mapped package and all packages found below its folder."""
    mapping = package_dir(root / "pyproject.toml") if mapping is None else mapping
    names: set[str] = set()
    for name, folder in mapping.items():
        names.add(name)
        names.update(f"{name}.{sub}" for sub in find_packages(where=str(root / folder)))
    return sorted(names)


if __name__ == "__main__":  # how pip, `python -m build` and setuptools' build backend run it
    setup(packages=discover_packages())
