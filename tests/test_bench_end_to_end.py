"""`benchmarks/end_to_end.py` at a tiny size: every stdout line is a valid common-format
measurement, both arms and the effective-token ratio are reported, and packing fills more
of the row slots than one document per row. Speed is never asserted."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCHMARKS = os.path.join(ROOT, "benchmarks")
sys.path.insert(0, BENCHMARKS)

import common  # noqa: E402

ARMS = {"kmlm", "kerashub"}
PER_ARM = {"effective_tokens_per_second", "padded_tokens_per_second", "non_padding_share",
           "step_seconds", "warmup_seconds"}


@pytest.fixture(scope="module")
def entries():
    command = [sys.executable, os.path.join(BENCHMARKS, "end_to_end.py"), "--preset", "tiny",
               "--seq-len", "32", "--batch-size", "4", "--steps", "3", "--rounds", "1",
               "--max-documents", "200", "--vocab-size", "300", "--no-jit"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "effective tok/s" in done.stderr  # the table goes to stderr
    lines = done.stdout.splitlines()
    assert lines
    return [common.validate(json.loads(line)) for line in lines]


def test_both_arms_and_the_ratio_are_reported(entries):
    by_arm = {}
    for e in entries:
        assert e["benchmark"] == "end_to_end" and "machine" in e
        assert e["shape"]["seq_len"] == 32 and e["shape"]["batch_size"] == 4
        by_arm.setdefault(e["arm"], set()).add(e["measurement"])
    assert set(by_arm) == ARMS
    assert by_arm["kerashub"] == PER_ARM
    assert by_arm["kmlm"] == PER_ARM | {"effective_tokens_per_second_ratio"}
    values = {(e["arm"], e["measurement"]): e for e in entries}
    effective = values[("kmlm", "effective_tokens_per_second")]
    assert effective["baseline"] == "kerashub"
    assert effective["baseline_value"] == values[("kerashub", "effective_tokens_per_second")]["value"]
    ratio = values[("kmlm", "effective_tokens_per_second_ratio")]
    assert ratio["value"] == pytest.approx(effective["ratio"], rel=1e-3)
    assert ratio["target"] == 3.5
    for arm in ARMS:
        assert values[(arm, "effective_tokens_per_second")]["value"] > 0
        # Effective tokens never exceed the row slots they were fed in.
        assert (values[(arm, "effective_tokens_per_second")]["value"]
                <= values[(arm, "padded_tokens_per_second")]["value"] * (1 + 1e-6))


def test_packing_fills_more_of_the_rows_than_padding(entries):
    share = {e["arm"]: e["value"] for e in entries if e["measurement"] == "non_padding_share"}
    assert 0 < share["kerashub"] < share["kmlm"] <= 1
