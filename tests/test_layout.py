"""The package layout of the README ("Layout"): which parts of kmlm may import which.

Every .py file under kmlm/, layers/ and pipelines/ is parsed with `ast`; every import counts,
also those inside functions (the command line imports TensorFlow-heavy modules only there)
and `importlib.import_module("...")` with a literal name. The checker is a plain function so
that the tests below can also feed it small sources that break the rules.
"""

import ast
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Source folder -> the package it is installed as (pyproject.toml `package-dir`).
SOURCE_FOLDERS = {"kmlm": "kmlm", "layers": "kmlm.layers", "pipelines": "kmlm.pipelines"}

TOP = "top-level"  # kmlm/__init__.py and the single modules directly in kmlm/ (config, model, ...)
BASE = {TOP, "layers", "pipelines"}
ALL_PARTS = BASE | {"pretraining", "inference", "tasks", "serving", "wordvec", "interop", "cli"}

# Part of kmlm -> the parts its modules may import (a part may always import itself).
ALLOWED_IMPORTS = {
    "layers": set(),
    "pipelines": set(),
    TOP: BASE,
    "pretraining": BASE | {"wordvec"},
    "inference": BASE,
    "tasks": BASE,
    "serving": BASE | {"tasks", "inference"},
    "wordvec": BASE,
    "interop": BASE | {"tasks"},
    "cli": ALL_PARTS,
    "__main__": {"cli"},
}


def is_private(name):
    """True for `_x` names; dunder names such as `__version__` are public."""
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


class Layout:
    """The modules of the source tree, to tell which part of kmlm an imported name belongs to.

    Args:
        modules: dotted names of every module and package, e.g. {"kmlm", "kmlm.config",
            "kmlm.pretraining", "kmlm.pretraining.job", "kmlm.layers", ...}.
    """

    def __init__(self, modules):
        self.modules = set(modules)
        self.top_level = {name.split(".")[1] for name in self.modules
                          if name.count(".") == 1 and not self._is_package(name)} - {"__main__"}

    def _is_package(self, name):
        return any(other.startswith(name + ".") for other in self.modules)

    def part_of(self, module):
        """The part of kmlm that `module` belongs to, or None for a module outside kmlm."""
        names = module.split(".")
        if names[0] != "kmlm":
            return None
        if len(names) == 1 or names[1] in self.top_level:
            return TOP
        return names[1]


def source_modules(repo=REPO):
    """(path relative to the repo, dotted module name, is a package) for every .py file."""
    found = []
    for folder, package in SOURCE_FOLDERS.items():
        for directory, subdirectories, files in os.walk(os.path.join(repo, folder)):
            subdirectories[:] = sorted(d for d in subdirectories if d != "__pycache__")
            for file in sorted(f for f in files if f.endswith(".py")):
                path = os.path.relpath(os.path.join(directory, file), repo)
                inner = os.path.relpath(os.path.join(directory, file), os.path.join(repo, folder))
                parts = [package] + inner[: -len(".py")].split(os.sep)
                if parts[-1] == "__init__":
                    parts.pop()
                found.append((path, ".".join(parts), file == "__init__.py"))
    return found


def _absolute(module, level, importer, is_package):
    """The absolute name of `from <level dots><module> import ...` inside `importer`."""
    if not level:
        return module
    package = importer if is_package else importer.rpartition(".")[0]
    for _ in range(level - 1):
        package = package.rpartition(".")[0]
    return f"{package}.{module}" if module else package


def imports_of(tree, importer, is_package, layout):
    """Yields (line, imported module, imported name or None) for every import in `tree`.

    `from kmlm import pipelines` imports the module kmlm.pipelines; `from kmlm.x import y`
    imports the name y of kmlm.x unless kmlm.x.y is itself a module.
    """
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, None
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node.module or "", node.level, importer, is_package)
            for alias in node.names:
                if f"{base}.{alias.name}" in layout.modules:
                    yield node.lineno, f"{base}.{alias.name}", None
                else:
                    yield node.lineno, base, alias.name
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr == "import_module" and node.args
              and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            yield node.lineno, node.args[0].value, None


def layout_violations(path, source, importer, is_package, layout):
    """Every break of the import rules in one file, each as "path:line: what is wrong".

    Args:
        path: the file's path, for the messages.
        source: its text.
        importer: its dotted module name (e.g. "kmlm.serving.tasks").
        is_package: whether it is a package's __init__.py.
        layout: the `Layout` of the source tree.
    """
    part = layout.part_of(importer)
    if part not in ALLOWED_IMPORTS:
        return [f"{path}:1: part {part!r} of kmlm has no import rules; add it to ALLOWED_IMPORTS in "
                f"tests/test_layout.py and to the README's Layout section"]
    allowed = ALLOWED_IMPORTS[part] | {part}
    problems = []
    for line, module, name in imports_of(ast.parse(source, filename=path), importer, is_package, layout):
        where = f"{path}:{line}: {importer} ({part})"
        imported = module + (f".{name}" if name else "")
        if module.split(".")[0] in ("layers", "pipelines"):
            problems.append(f"{where} imports the bare folder {module!r}; import kmlm.{module} instead")
            continue
        target = layout.part_of(module)
        if target is None:
            continue
        if target not in allowed:
            others = ", ".join(sorted(ALLOWED_IMPORTS[part]))
            problems.append(f"{where} imports {imported} ({target}); {part} may import "
                            + (f"only {others}" if others else "nothing else of kmlm"))
        if name and is_private(name):
            problems.append(f"{where} imports the private name {name} of {module}; make it public or move it")
    return problems


@pytest.fixture(scope="module")
def tree():
    modules = source_modules()
    return modules, Layout(name for _, name, _ in modules)


def test_the_source_tree_has_the_documented_parts(tree):
    _, layout = tree
    parts = {layout.part_of(name) for name in layout.modules}
    assert parts == ALL_PARTS | {"__main__"}, parts
    assert {"config", "model", "files", "training", "run_directory"} <= layout.top_level


def test_imports_follow_the_layout(tree):
    modules, layout = tree
    problems = []
    for path, module, is_package in modules:
        with open(os.path.join(REPO, path), encoding="utf-8") as f:
            problems += layout_violations(path, f.read(), module, is_package, layout)
    assert not problems, "imports against the layout (README, Layout):\n" + "\n".join(problems)


# A small synthetic tree for the checker's own tests.
SYNTHETIC = Layout({
    "kmlm", "kmlm.config", "kmlm.model", "kmlm.__main__", "kmlm.layers", "kmlm.layers.attention",
    "kmlm.pipelines", "kmlm.pipelines.masking", "kmlm.pretraining", "kmlm.pretraining.job",
    "kmlm.serving", "kmlm.serving.tasks", "kmlm.tasks", "kmlm.tasks.finetune", "kmlm.wordvec",
    "kmlm.wordvec.glove", "kmlm.cli", "kmlm.cli.main",
})


def _violations(source, importer, is_package=False):
    path = importer.replace(".", "/") + ".py"
    return layout_violations(path, source, importer, is_package, SYNTHETIC)


def test_checker_accepts_imports_that_run_downward():
    source = (
        "import os\nimport numpy as np\nimport kmlm\nfrom kmlm import __version__\n"
        "from kmlm.config import ModelConfig\nfrom kmlm.layers.attention import Attention\n"
        "from kmlm import pipelines\nfrom kmlm.wordvec.glove import train_glove\n"
        "from .. import model\n"
    )
    assert _violations(source, "kmlm.pretraining.job") == []
    assert _violations("from kmlm.tasks.finetune import Tasker\n", "kmlm.serving.tasks") == []
    assert _violations("from kmlm.cli.main import main\n", "kmlm.__main__") == []
    assert _violations("from kmlm.serving.tasks import export_task\n", "kmlm.cli.main") == []


def test_checker_names_file_line_and_forbidden_import():
    source = "import os\n\n\ndef export():\n    from kmlm.serving.tasks import export_task\n"
    assert _violations(source, "kmlm.pretraining.job") == [
        "kmlm/pretraining/job.py:5: kmlm.pretraining.job (pretraining) imports kmlm.serving.tasks.export_task "
        "(serving); pretraining may import only layers, pipelines, top-level, wordvec"
    ]


@pytest.mark.parametrize("importer, source, forbidden", [
    ("kmlm.layers.attention", "from kmlm.config import ModelConfig\n", "kmlm.config.ModelConfig (top-level)"),
    ("kmlm.layers.attention", "import kmlm.pipelines.masking\n", "kmlm.pipelines.masking (pipelines)"),
    ("kmlm.pipelines.masking", "from kmlm import layers\n", "kmlm.layers (layers)"),
    ("kmlm.pipelines.masking", "import kmlm\n", "kmlm (top-level)"),
    ("kmlm.config", "from kmlm.tasks.finetune import Tasker\n", "kmlm.tasks.finetune.Tasker (tasks)"),
    ("kmlm.model", "import importlib\nimportlib.import_module('kmlm.serving.tasks')\n", "kmlm.serving.tasks"),
    ("kmlm.wordvec.glove", "from kmlm.pretraining.job import pretrain\n", "kmlm.pretraining.job.pretrain"),
    ("kmlm.serving.tasks", "from kmlm.pretraining import job\n", "kmlm.pretraining.job (pretraining)"),
    ("kmlm.tasks.finetune", "from kmlm.cli.main import main\n", "kmlm.cli.main.main (cli)"),
    ("kmlm.tasks.finetune", "from ..cli import main\n", "kmlm.cli.main (cli)"),
])
def test_checker_rejects_imports_against_the_layout(importer, source, forbidden):
    problems = _violations(source, importer)
    assert len(problems) == 1 and f" imports {forbidden}" in problems[0], problems


def test_checker_rejects_private_names_and_bare_folders():
    problems = _violations("from kmlm.pipelines.masking import _draw, mask_batch\n", "kmlm.pretraining.job")
    assert problems == [
        "kmlm/pretraining/job.py:1: kmlm.pretraining.job (pretraining) imports the private name _draw of "
        "kmlm.pipelines.masking; make it public or move it"
    ]
    assert "private name _positive_int" in _violations("from kmlm.cli.main import _positive_int\n",
                                                       "kmlm.cli.bert")[0]
    assert _violations("from kmlm import __version__\n", "kmlm.cli.main") == []
    problems = _violations("import layers.attention\n", "kmlm.model")
    assert len(problems) == 1 and "imports the bare folder 'layers.attention'" in problems[0]


def test_checker_rejects_a_part_without_rules():
    layout = Layout(SYNTHETIC.modules | {"kmlm.bench", "kmlm.bench.speed"})
    problems = layout_violations("kmlm/bench/speed.py", "import os\n", "kmlm.bench.speed", False, layout)
    assert len(problems) == 1 and "part 'bench' of kmlm has no import rules" in problems[0]
