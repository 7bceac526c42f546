"""Loading never runs code from a file: no pickle, safe-mode Keras loading, safe config parsing.

The refusal of a crafted `.keras` file with a Lambda layer is tested end to end in
tests/cli/test_bad_input.py; here the sources are checked for the calls that would undo it."""

import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCE_DIRS = ("kmlm", "layers", "pipelines")
UNSAFE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "joblib", "marshal", "shelve", "cloudpickle"}


def _sources():
    for folder in SOURCE_DIRS:
        for dirpath, _, filenames in os.walk(os.path.join(ROOT, folder)):
            for name in sorted(filenames):
                if name.endswith(".py"):
                    path = os.path.join(dirpath, name)
                    with open(path, encoding="utf-8") as file:
                        yield os.path.relpath(path, ROOT), ast.parse(file.read())


def _call_name(node):
    parts = []
    func = node.func
    while isinstance(func, ast.Attribute):
        parts.append(func.attr)
        func = func.value
    if isinstance(func, ast.Name):
        parts.append(func.id)
    return ".".join(reversed(parts))


def _unsafe_uses(path, tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in UNSAFE_MODULES:
                    yield f"{path}:{node.lineno} imports {alias.name}"
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in UNSAFE_MODULES:
            yield f"{path}:{node.lineno} imports from {node.module}"
        elif isinstance(node, ast.Call):
            name = _call_name(node)
            keywords = {k.arg: k.value for k in node.keywords}
            if name.split(".")[-1] in ("eval", "exec") and len(name.split(".")) == 1:
                yield f"{path}:{node.lineno} calls {name}"
            if name.endswith(("torch.load", "yaml.load", "yaml.unsafe_load", "yaml.full_load")):
                loader = keywords.get("Loader")
                if not (name.endswith("yaml.load") and isinstance(loader, ast.Attribute) and loader.attr == "SafeLoader"):
                    yield f"{path}:{node.lineno} calls {name} (use yaml.safe_load / safetensors)"
            for flag, unsafe in (("safe_mode", False), ("allow_pickle", True)):
                value = keywords.get(flag)
                if isinstance(value, ast.Constant) and value.value is unsafe:
                    yield f"{path}:{node.lineno} passes {flag}={unsafe}"
            if name.endswith("load_model") and "safe_mode" in keywords and not isinstance(keywords["safe_mode"], ast.Constant):
                yield f"{path}:{node.lineno} passes a computed safe_mode"


def test_no_source_file_unpickles_or_turns_off_safe_mode():
    problems = [problem for path, tree in _sources() for problem in _unsafe_uses(path, tree)]
    assert problems == []


@pytest.mark.parametrize(
    "code, problem",
    [
        ("import pickle", "x.py:1 imports pickle"),
        ("import numpy as np\nnp.load('a.npy', allow_pickle=True)", "x.py:2 passes allow_pickle=True"),
        ("import keras\nkeras.saving.load_model('m.keras', safe_mode=False)", "x.py:2 passes safe_mode=False"),
        ("import yaml\nyaml.load(open('c.yaml'))", "x.py:2 calls yaml.load (use yaml.safe_load / safetensors)"),
        ("import torch\ntorch.load('w.bin')", "x.py:2 calls torch.load (use yaml.safe_load / safetensors)"),
    ],
)
def test_the_audit_catches_unsafe_loading(code, problem):
    assert list(_unsafe_uses("x.py", ast.parse(code))) == [problem]


def test_the_audit_accepts_safe_loading():
    code = "import yaml, json\nyaml.load(f, Loader=yaml.SafeLoader)\nyaml.safe_load(f)\njson.load(f)"
    assert list(_unsafe_uses("x.py", ast.parse(code))) == []
