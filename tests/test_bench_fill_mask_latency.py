"""benchmarks/fill_mask_latency.py runs end to end on a tiny model and emits well-formed JSON lines."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import common  # noqa: E402
from fill_mask_latency import macro_f1  # noqa: E402

ARMS = {"export", "tflite-int8", "tflite-float", "hf-pad128", "hf-dynamic"}
# arm -> the baselines its latency is divided by
RATIOS = {"export": {"hf-pad128", "hf-dynamic"}, "tflite-int8": {"export", "tflite-float", "hf-pad128", "hf-dynamic"}}


def test_script_emits_latencies_and_ratios_against_each_peer():
    pytest.importorskip("transformers")
    completed = subprocess.run(
        [sys.executable, "benchmarks/fill_mask_latency.py", "--preset", "tiny", "--vocab-size", "2000",
         "--seq-len", "128", "--batch-sizes", "1", "2", "--repeats", "2", "--warmup", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    lines = [common.validate(json.loads(line)) for line in completed.stdout.splitlines()]
    for batch in (1, 2):
        rows = [e for e in lines if e["shape"]["batch_size"] == batch]
        latency = {e["arm"]: e["value"] for e in rows if e["measurement"] == "latency_ms"}
        assert set(latency) == ARMS
        ratios = [e for e in rows if e["measurement"] == "latency_ratio"]
        assert {arm: {e["baseline"] for e in ratios if e["arm"] == arm} for arm in RATIOS} == RATIOS
        for entry in ratios:
            assert entry["value"] == pytest.approx(latency[entry["arm"]], rel=1e-4)
            assert entry["baseline_value"] == pytest.approx(latency[entry["baseline"]], rel=1e-4)
            assert entry["ratio"] == pytest.approx(latency[entry["arm"]] / latency[entry["baseline"]], rel=1e-3)
            assert entry["higher_is_better"] is False


def test_macro_f1_against_sklearn_definition_by_hand():
    import numpy as np

    truth = np.array([0, 0, 1, 1, 2])
    guess = np.array([0, 1, 1, 1, 0])
    # class 0: tp 1, predicted 2, actual 2 -> 0.5; class 1: tp 2, 3, 2 -> 0.8; class 2: 0
    assert macro_f1(truth, guess, 3) == pytest.approx((0.5 + 0.8 + 0.0) / 3)
