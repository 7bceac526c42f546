"""The `Example:` sections of the public API's docstrings run and print what they show.

Every module under kmlm/, layers/ and pipelines/ is collected. An example that needs a
trained run directory, a corpus on disk or minutes of training carries `# doctest: +SKIP`
on those lines, with the reason in the docstring text; everything else runs here.
"""

import doctest
import importlib
import os
import pkgutil

import pytest

import kmlm

FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def module_names():
    names = []
    for package in ("kmlm", "kmlm.layers", "kmlm.pipelines"):
        module = importlib.import_module(package)
        names.append(package)
        for info in pkgutil.walk_packages(module.__path__, prefix=package + "."):
            if package == "kmlm" and info.name.startswith(("kmlm.layers", "kmlm.pipelines")):
                continue
            if info.name.endswith("__main__"):
                continue
            names.append(info.name)
    return sorted(set(names))


def run_examples(module, tmp_path):
    """Runs the module's docstring examples in `tmp_path`; returns (failed, attempted, report)."""
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    report = []
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        for test in finder.find(module, module.__name__, globs=dict(vars(module))):
            runner.run(test, out=report.append)
    finally:
        os.chdir(cwd)
    return runner.failures, runner.tries, "".join(report)


def test_every_package_module_is_collected():
    names = module_names()
    assert "kmlm.model" in names and "kmlm.layers.pooler" in names and "kmlm.pipelines.masking" in names
    assert all(not name.endswith("__main__") for name in names)


@pytest.mark.parametrize("name", module_names())
def test_docstring_examples(name, tmp_path):
    module = importlib.import_module(name)
    failed, attempted, report = run_examples(module, tmp_path)
    assert failed == 0, f"{failed} of {attempted} docstring examples in {name} failed:\n{report[-6000:]}"


def test_a_wrong_example_fails(tmp_path):
    import types

    module = types.ModuleType("kmlm_wrong_example")
    module.__doc__ = ">>> 1 + 1\n3\n"
    failed, attempted, _ = run_examples(module, tmp_path)
    assert (failed, attempted) == (1, 1)
