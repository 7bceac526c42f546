"""benchmarks/input_pipeline.py runs at a tiny shape and prints well-formed measurements.

Only the output format is checked: timings are never asserted.
"""

import json
import math
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
import common  # noqa: E402

MASKING_ARMS = {"kmlm-whole_word", "kmlm-token", "keras-hub"}


@pytest.fixture(scope="module")
def measurements(tmp_path_factory):
    jsonl = tmp_path_factory.mktemp("bench") / "out.jsonl"
    command = [sys.executable, "benchmarks/input_pipeline.py", "--seq-len", "32", "--batch-size", "4",
               "--rounds", "1", "--passes", "1", "--max-documents", "200", "--vocab-size", "300",
               "--mask-batches", "10", "--mask-passes", "1", "--preset", "tiny", "--model-steps", "1", "--no-jit",
               "--jsonl", str(jsonl)]
    env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    assert jsonl.read_text().strip().splitlines() == lines  # --jsonl appends the same lines
    return [common.validate(json.loads(line)) for line in lines], result.stderr


def by_key(entries):
    return {(entry["measurement"], entry["arm"]): entry for entry in entries}


def test_every_line_is_a_valid_measurement(measurements):
    entries, _ = measurements
    assert entries
    for entry in entries:
        assert entry["benchmark"] == "input_pipeline"
        assert entry["shape"]["seq_len"] == 32 and entry["shape"]["batch_size"] == 4
        assert entry["shape"]["vocab_size"] <= 300 and entry["shape"]["max_predictions"] >= 1
        assert entry["machine"]["cores"]
        if "baseline" in entry:
            assert math.isclose(entry["ratio"], entry["value"] / entry["baseline_value"], rel_tol=1e-3)


def test_expected_measurements_and_arms(measurements):
    entries, stderr = measurements
    found = by_key(entries)
    expected = {("text_mb_per_second", "tokenize"), ("text_mb_per_second", "pipeline"),
                ("rows_per_second", "tokenize"), ("rows_per_second", "pipeline"),
                ("seconds_per_pass", "pipeline"), ("rows_per_second", "model-tiny-nojit")}
    expected |= {("masking_rows_per_second", arm) for arm in MASKING_ARMS}
    assert set(found) == expected
    overhead = found[("seconds_per_pass", "pipeline")]
    assert overhead["baseline"] == "tokenize" and overhead["higher_is_better"] is False
    assert math.isclose(overhead["overhead"], overhead["ratio"] - 1, rel_tol=1e-3, abs_tol=1e-6)
    for arm in ("kmlm-whole_word", "kmlm-token"):
        assert found[("masking_rows_per_second", arm)]["baseline"] == "keras-hub"
    assert found[("rows_per_second", "model-tiny-nojit")]["baseline"] == "pipeline"
    assert "pipeline overhead" in stderr and "measurement" in stderr  # the table


def test_masking_arms_saw_the_same_rows(measurements):
    entries, _ = measurements
    masking = [entry for entry in entries if entry["measurement"] == "masking_rows_per_second"]
    assert {entry["arm"] for entry in masking} == MASKING_ARMS
    assert {entry["rows"] for entry in masking} == {10 * 4}
    for entry in masking:  # every arm picks targets, at most P per row
        assert 0 < entry["predictions_per_row"] <= entry["shape"]["max_predictions"]


def test_help_explains_what_is_measured():
    result = subprocess.run([sys.executable, "benchmarks/input_pipeline.py", "--help"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0
    for word in ("tokenize", "pipeline", "masking", "MaskedLMMaskGenerator", "--skip-model"):
        assert word in result.stdout
