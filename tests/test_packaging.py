"""The wheel a user installs holds the whole package: every module, every config, the licence and the
console scripts (``.ci/run`` then installs it and runs oe-train and oe-eval from an empty directory)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import REPO

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

SCRIPTS = {"oe-train", "oe-eval", "oe-table", "oe-predict", "oe-export", "oe-demo"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("dist")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(out), str(REPO)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (path,) = out.glob("oe_lightning-*.whl")
    return zipfile.ZipFile(path)


def _source_files(folder: Path, pattern: str) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob(pattern) if "__pycache__" not in p.parts}


def test_the_wheel_holds_every_module_and_config_of_the_source_tree(wheel):
    names = set(wheel.namelist())
    modules = {f"oe_lightning/{p}" for p in _source_files(REPO / "oe_lightning", "*.py")}
    configs = {f"oe_lightning/conf/{p}" for p in _source_files(REPO / "conf", "*.yaml")
               if not p.startswith("local/")}  # conf/local/*.yaml: a machine's own settings, git-ignored
    assert modules - names == set()
    assert configs - names == set()
    assert {"oe_lightning/detectors/__init__.py", "oe_lightning/conf/train.yaml",
            "oe_lightning/conf/detector/knn.yaml", "oe_lightning/data/demo_folders.py"} <= names
    # nothing from the tests, scripts or the repository's own folders
    assert not [n for n in names if n.startswith(("tests/", "scripts/", "conf/", "build/"))]


def test_the_wheel_carries_the_licence_and_every_console_script(wheel):
    names = wheel.namelist()
    (license_file,) = [n for n in names if n.endswith(".dist-info/licenses/LICENSE")]
    assert "Apache License" in wheel.read(license_file).decode()
    metadata = wheel.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "License-Expression: Apache-2.0" in metadata
    entry_points = wheel.read(next(n for n in names if n.endswith(".dist-info/entry_points.txt"))).decode()
    scripts = {line.split("=", 1)[0].strip() for line in entry_points.split("[console_scripts]")[1].splitlines()
               if "=" in line}
    declared = set(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"])
    assert scripts == declared == SCRIPTS


def test_version_floors_exclude_loaders_that_unpickle():
    """torch < 2.6 reads a checkpoint with pickle unless told otherwise (Lightning's resume passes
    weights_only=None); timm 1.0.9-1.0.25's load_checkpoint passed weights_only=False."""
    from packaging.requirements import Requirement
    from packaging.version import Version

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    requirements = [Requirement(r) for r in project["dependencies"]]
    requirements += [Requirement(r) for extra in project["optional-dependencies"].values() for r in extra]
    floors = {"torch": "2.6", "timm": "1.0.26"}
    for requirement in requirements:
        if requirement.name in floors:
            below = _just_below(floors[requirement.name])
            assert not requirement.specifier.contains(below), f"{requirement} admits {below}"
            assert requirement.specifier.contains(Version(floors[requirement.name])), str(requirement)


def _just_below(version: str) -> str:
    """The last release number before ``version`` that a range could still admit (e.g. 2.5.99)."""
    major, minor, *patch = (int(p) for p in version.split("."))
    return f"{major}.{minor - 1}.99" if not patch or patch[0] == 0 else f"{major}.{minor}.{patch[0] - 1}"
