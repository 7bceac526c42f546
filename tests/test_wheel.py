"""The built wheel holds every package of the source tree.

`pip install -e .` imports straight from the source folders, so a subpackage missing from
pyproject.toml's `packages` passes every other test and breaks only for users who install the
wheel. This test builds the wheel from a copy of the sources, installs it into an empty
directory, and imports every package from there in a fresh interpreter that cannot see the
sources (no site-packages .pth files, so not the editable install either; the venv's
site-packages come after the wheel's directory on the path, for the dependencies only).
"""

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile

import pytest

from tests.test_layout import REPO, SOURCE_FOLDERS, source_modules

BUILD_FILES = ("pyproject.toml", "README.md")


def _copy_sources(destination):
    """Copies what the build reads (pyproject.toml, README.md, the source folders)."""
    for name in BUILD_FILES:
        shutil.copy2(os.path.join(REPO, name), destination)
    for folder in SOURCE_FOLDERS:
        shutil.copytree(os.path.join(REPO, folder), os.path.join(destination, folder),
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


def _pip(*args, cwd):
    result = subprocess.run([sys.executable, "-m", "pip", *args, "--quiet", "--disable-pip-version-check"],
                            cwd=cwd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def _installed_module_name(path):
    """kmlm/pretraining/job.py -> kmlm.pretraining.job; kmlm/layers/__init__.py -> kmlm.layers."""
    parts = path[: -len(".py")].split("/")
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


# Runs in the fresh interpreter: imports every package and reports where each one came from.
PROBE = """
import importlib, json, sys
found = {}
for name in sys.argv[1:]:
    found[name] = importlib.import_module(name).__file__
print(json.dumps(found))
"""


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(site directory the wheel was installed into, names of the wheel's .py modules)."""
    base = tmp_path_factory.mktemp("wheel")
    source, dist, site = base / "source", base / "dist", base / "site"
    source.mkdir()
    _copy_sources(source)
    _pip("wheel", ".", "--no-deps", "--no-build-isolation", "-w", str(dist), cwd=source)
    (wheel,) = dist.glob("kmlm-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        modules = {_installed_module_name(name) for name in archive.namelist() if name.endswith(".py")}
    _pip("install", "--no-deps", "--target", str(site), str(wheel), cwd=base)
    return site, modules


def _fresh_python(site, *args):
    """Runs python -S (no .pth files: no editable install) with the wheel's directory first on the path."""
    environment = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), sysconfig.get_paths()["purelib"]]))
    return subprocess.run([sys.executable, "-S", *args], cwd=str(site.parent), env=environment,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_the_wheel_holds_every_module_of_the_source_tree(installed):
    _, modules = installed
    missing = sorted({name for _, name, _ in source_modules()} - modules)
    assert not missing, f"modules missing from the wheel (pyproject.toml `packages`?): {', '.join(missing)}"


@pytest.mark.slow
def test_every_package_imports_from_the_installed_wheel(installed):
    site, _ = installed
    packages = sorted(name for _, name, is_package in source_modules() if is_package)
    assert {"kmlm", "kmlm.cli", "kmlm.layers", "kmlm.pipelines"} <= set(packages)
    result = _fresh_python(site, "-c", PROBE, *packages)
    assert result.returncode == 0, result.stderr[-3000:]
    found = json.loads(result.stdout.strip().splitlines()[-1])
    root = os.path.realpath(site) + os.sep
    outside = {name: path for name, path in found.items() if not os.path.realpath(path).startswith(root)}
    assert not outside, f"packages imported from outside the installed wheel: {outside}"


@pytest.mark.slow
def test_the_installed_command_line_answers_help(installed):
    site, _ = installed
    result = _fresh_python(site, "-m", "kmlm", "--help")
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("usage: kmlm ") and "fill-mask" in result.stdout
