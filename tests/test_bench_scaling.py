"""`benchmarks/scaling.py` at a tiny size: every stdout line is a valid common-format
measurement, and the parameter count and FLOPs/token it reports match values computed
here independently. Speed is never asserted."""

import json
import os
import subprocess
import sys

import pytest

import kmlm
from kmlm.pipelines import max_predictions_for

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCHMARKS = os.path.join(ROOT, "benchmarks")
sys.path.insert(0, BENCHMARKS)

import common  # noqa: E402
from train_throughput import training_flops_per_token  # noqa: E402

VOCAB = 300
SEQ_LENS = (32, 64)
MEASUREMENTS = {"step_time", "tokens_per_second", "first_step_s", "params", "training_flops_per_token",
                "achieved_gflops", "peak_rss_mib", "model_memory_mib"}


@pytest.fixture(scope="module")
def entries():
    command = [sys.executable, os.path.join(BENCHMARKS, "scaling.py"), "--presets", "tiny", "nosuch",
               "--seq-lens", *map(str, SEQ_LENS), "--seq-len-preset", "tiny", "--preset-seq-len", "32",
               "--batch-size", "2", "--steps", "1", "--vocab-size", str(VOCAB), "--timeout", "300"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "| seq_len | tiny |" in done.stderr  # the Markdown table
    lines = done.stdout.splitlines()
    assert lines
    return [common.validate(json.loads(line)) for line in lines]


def test_every_configuration_is_measured(entries):
    # The unknown preset fails in its subprocess: one error line, and the sweep goes on.
    errors = [e for e in entries if e["measurement"] == "error"]
    assert [e["arm"] for e in errors] == ["kmlm-jit/nosuch/S32/B2"]
    assert "unknown preset 'nosuch'" in errors[0]["error"]
    by_arm = {}
    for e in entries:
        if e["measurement"] == "error":
            continue
        assert e["benchmark"] == "scaling" and "machine" in e and "shape" in e
        by_arm.setdefault(e["arm"], set()).add(e["measurement"])
    # (tiny, 32) is in both sweeps and runs once.
    assert by_arm == {f"kmlm-jit/tiny/S{s}/B2": MEASUREMENTS for s in SEQ_LENS}


def test_params_and_flops_match_independent_counts(entries):
    values = {(e["shape"]["seq_len"], e["measurement"]): e["value"] for e in entries if "error" not in e}
    layers, hidden, _ = kmlm.PRESETS["tiny"]
    config = kmlm.ModelConfig.from_preset("tiny", vocabulary_size=VOCAB, max_position=512)
    for seq_len in SEQ_LENS:
        predictions = max_predictions_for(seq_len, 0.15)
        params = kmlm.build_mlm_model(config, predictions).count_params()
        assert values[(seq_len, "params")] == params
        flops = training_flops_per_token(layers, hidden, 4 * hidden, seq_len, predictions, VOCAB)["total"]
        assert values[(seq_len, "training_flops_per_token")] == pytest.approx(flops, rel=1e-6)
        step = values[(seq_len, "step_time")]
        assert values[(seq_len, "tokens_per_second")] == pytest.approx(2 * seq_len / step, rel=1e-3)
        assert values[(seq_len, "achieved_gflops")] == pytest.approx(flops * 2 * seq_len / step / 1e9, rel=1e-3)
        assert values[(seq_len, "peak_rss_mib")] > values[(seq_len, "model_memory_mib")] > 0
