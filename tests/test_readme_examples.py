"""The README's Python examples still run.

Every ```python block of README.md runs as a script in a fresh interpreter, in a directory
that holds what the examples expect to find there (a pretrained run in `runs/demo`, its
TensorFlow Serving export, fine-tuning examples, word-pair and analogy files). The runs are
made small and offline by the reviewed textual substitutions in `EXAMPLES`; every
substitution must still match its block, and every block must be listed, either with its
substitutions or with the reason it cannot run here, so a new or changed block fails until
someone classifies it.
"""

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")
SCRIPT = "readme_example.py"
TIMEOUT_S = 600


@dataclasses.dataclass(frozen=True)
class ReadmeBlock:
    heading: str  # the nearest Markdown heading above the block
    line: int  # README line of the opening fence
    source: str


def python_blocks(text):
    """The ```python blocks of a Markdown text, in order, with the heading each sits under."""
    blocks, heading, fence, body = [], "", None, []
    for number, line in enumerate(text.splitlines(), 1):
        if fence is None:
            if line.startswith("```"):
                fence = (line[3:].strip(), number)
                body = []
            elif re.match(r"#{1,6} ", line):
                heading = line.lstrip("#").strip()
        elif line.startswith("```"):
            if fence[0] == "python":
                blocks.append(ReadmeBlock(heading, fence[1], "\n".join(body) + "\n"))
            fence = None
        else:
            body.append(line)
    assert fence is None, f"README.md: the fence opened at line {fence[1]} is never closed"
    return blocks


def block_ids(blocks):
    """One name per block: its heading, with " (2)", " (3)" ... for later blocks under the same one."""
    seen, ids = {}, []
    for block in blocks:
        seen[block.heading] = seen.get(block.heading, 0) + 1
        ids.append(block.heading if seen[block.heading] == 1 else f"{block.heading} ({seen[block.heading]})")
    return ids


@dataclasses.dataclass(frozen=True)
class Run:
    """Run the block after these (old, new) replacements, each of which must match; then
    the files in `writes` (relative to the block's directory) must exist and its stdout
    must match the regular expression `prints`."""

    substitutions: tuple = ()
    writes: tuple = ()
    prints: str = ""


@dataclasses.dataclass(frozen=True)
class Skip:
    """Do not run the block: `reason`. `marker` must occur in it, so that a rewritten block
    is looked at again."""

    reason: str
    marker: str


# Keyed by block id (see `block_ids`). Substitutions shrink the work (model size, steps,
# vocabulary, epochs, vector size, corpus), never the functions and arguments a block uses.
EXAMPLES = {
    "Distributed training (`--strategy`)": Skip(
        "starts a tf.data service dispatcher and blocks forever in join()", marker="dispatcher.join()"),
    "Python API": Run(substitutions=(
        ("learn_vocabulary(documents, 8192)", "learn_vocabulary(documents, 300)"),
        ("seq_len=128, batch_size=32", "seq_len=32, batch_size=4"),
        ("max_predictions_for(128,", "max_predictions_for(32,"),
        ('from_preset("mini",', 'from_preset("tiny",'),
        ("total_steps=300", "total_steps=2"),
        ("steps_per_epoch=300", "steps_per_epoch=2"),
    )),
    "Fine-tuning": Run(
        substitutions=(('eval="dev.jsonl")', 'eval="dev.jsonl", epochs=1)'),),
        writes=("runs/topics/model.keras", "runs/topics/task.json"),
    ),
    "Import a Hugging Face BERT checkpoint: `kmlm convert`": Run(writes=("runs/minilm/config.json",)),
    "What the export guarantees": Run(prints=r"^\[b['\"]"),  # the top-k tokens of the first [MASK]
    "Requests": Skip("needs a TensorFlow Serving server listening on localhost:8500",
                     marker='grpc.insecure_channel("localhost:8500")'),
    "Word vectors": Run(
        substitutions=(
            # a slice of the corpus that still holds the words the block asks about
            ('load_documents("builtin:python-docs")', 'load_documents("builtin:python-docs").take(1500)'),
            ("Word2VecSettings(dim=100, epochs=5)", "Word2VecSettings(dim=16, epochs=1)"),
            ("limit=5000", "limit=200"),
        ),
        writes=("vectors.txt", "projector/vectors.tsv", "projector/metadata.tsv", "pca.png"),
    ),
    "FastText: `kmlm fasttext`": Run(writes=("vectors/tiny/model.bin", "vectors/tiny/vectors.vec")),
}

with open(README, encoding="utf-8") as readme:
    BLOCKS = python_blocks(readme.read())
IDS = block_ids(BLOCKS)


def substituted(source, substitutions):
    """`source` with every (old, new) replacement made; fails on one that no longer matches."""
    for old, new in substitutions:
        assert old in source, f"substitution {old!r} -> {new!r} no longer matches the block; update EXAMPLES"
        source = source.replace(old, new)
    return source


# ---------------------------------------------------------------------------------------------
# What the examples expect in their working directory


CLASSIFY_EXAMPLES = {
    "files": ["open the file in this directory", "read the lines of the file", "write the file to disk",
              "list the files of a directory", "remove the file from the directory", "copy the file"],
    "numbers": ["add two integers", "the sum of the numbers", "round the number down",
                "divide the integer by two", "the square root of a number", "multiply the numbers"],
}

WORD_PAIRS = """# Word 1\tWord 2\tHuman (mean)
file\tdirectory\t8.0
list\tdict\t6.5
file\tlist\t3.0
return\tvalue\t5.0
string\tinteger\t4.5
"""

ANALOGIES = """: plural
list lists string strings
file files module modules
: gram
module modules file files
"""


def kmlm_command(*argv, cwd):
    result = subprocess.run([sys.executable, "-m", "kmlm", *argv], cwd=cwd, env=example_environment(),
                            capture_output=True, text=True, timeout=TIMEOUT_S)
    assert result.returncode == 0, f"kmlm {argv[0]} failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"


def write_classify_examples(path, keep):
    """JSONL `text`/`label` rows: the first `keep` texts of each label (or the rest with keep < 0)."""
    with open(path, "w", encoding="utf-8") as f:
        for label, texts in CLASSIFY_EXAMPLES.items():
            for text in (texts[:keep] if keep > 0 else texts[keep:]):
                f.write(json.dumps({"text": text, "label": label}) + "\n")


def example_environment():
    environment = dict(os.environ)
    environment.update(MPLBACKEND="Agg", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TF_CPP_MIN_LOG_LEVEL="2")
    return environment


@pytest.fixture(scope="module")
def prepared_directory(tmp_path_factory):
    """A directory with runs/demo (a 4-step tiny pretraining run), serving/kmlm/1 (its
    export), train.jsonl / dev.jsonl, wordsim353.tsv and questions-words.txt."""
    root = tmp_path_factory.mktemp("readme")
    kmlm_command("pretrain", "--preset", "tiny", "--steps", "4", "--seq-len", "32", "--batch-size", "4",
                 "--vocab-size", "300", "--log-points", "1", "--eval-batches", "1", "--out", "runs/demo", "--quiet",
                 cwd=root)
    kmlm_command("export", "runs/demo", "--out", "serving/kmlm", cwd=root)
    assert os.path.isfile(root / "serving" / "kmlm" / "1" / "saved_model.pb")
    write_classify_examples(root / "train.jsonl", keep=4)
    write_classify_examples(root / "dev.jsonl", keep=-2)
    (root / "wordsim353.tsv").write_text(WORD_PAIRS, encoding="utf-8")
    (root / "questions-words.txt").write_text(ANALOGIES, encoding="utf-8")
    return root


# ---------------------------------------------------------------------------------------------
# Tests


def test_readme_blocks_are_found():
    assert len(BLOCKS) >= 5
    assert all(block.source.strip() for block in BLOCKS)
    sample = "# Title\n\n```bash\n# not a heading\n```\n\n## Use\n\n```python\nimport os\n```\n"
    assert python_blocks(sample) == [ReadmeBlock("Use", 9, "import os\n")]


def test_every_readme_block_is_run_or_skipped_with_a_reason():
    unlisted = [name for name in IDS if name not in EXAMPLES]
    stale = [name for name in EXAMPLES if name not in IDS]
    assert not unlisted, f"README Python blocks not in EXAMPLES (give substitutions or a reason to skip): {unlisted}"
    assert not stale, f"EXAMPLES entries with no README Python block: {stale}"
    for name, block in zip(IDS, BLOCKS):
        example = EXAMPLES[name]
        if isinstance(example, Skip):
            assert example.marker in block.source, f"the skipped block under {name!r} changed; look at it again"
        else:
            substituted(block.source, example.substitutions)


def block_params():
    """One pytest parameter per block; a skipped block is marked so, with its reason, and
    never sets up the prepared directory."""
    params = []
    for name, block in zip(IDS, BLOCKS):
        example = EXAMPLES.get(name)
        marks = [pytest.mark.skip(reason=example.reason)] if isinstance(example, Skip) else []
        params.append(pytest.param(name, block, marks=marks, id=name))
    return params


@pytest.mark.slow
@pytest.mark.parametrize("name, block", block_params())
def test_readme_python_block_runs(name, block, prepared_directory, tmp_path):
    example = EXAMPLES.get(name)
    assert example is not None, f"README.md line {block.line}: block under {name!r} is not in EXAMPLES"
    source = substituted(block.source, example.substitutions)
    cwd = tmp_path / "cwd"
    shutil.copytree(prepared_directory, cwd, symlinks=True)
    (cwd / SCRIPT).write_text(source, encoding="utf-8")
    result = subprocess.run([sys.executable, SCRIPT], cwd=cwd, env=example_environment(),
                            capture_output=True, text=True, timeout=TIMEOUT_S)
    assert result.returncode == 0, (
        f"README.md line {block.line} ({name}) failed:\n{source}\n--- stdout\n{result.stdout[-2000:]}\n"
        f"--- stderr\n{result.stderr[-4000:]}")
    missing = [path for path in example.writes if not os.path.exists(cwd / path)]
    assert not missing, f"README.md line {block.line} ({name}) ran but did not write {missing}"
    assert re.search(example.prints, result.stdout, re.MULTILINE), (
        f"README.md line {block.line} ({name}) printed no match for {example.prints!r}:\n{result.stdout[-2000:]}")
