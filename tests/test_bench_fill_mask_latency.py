"""benchmarks/fill_mask_latency.py runs end to end on a tiny model and emits well-formed JSON lines."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import common  # noqa: E402


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
        assert set(latency) == {"export", "hf-pad128", "hf-dynamic"}
        ratios = {e["baseline"]: e for e in rows if e["measurement"] == "latency_ratio"}
        assert set(ratios) == {"hf-pad128", "hf-dynamic"}
        for peer, entry in ratios.items():
            assert entry["value"] == pytest.approx(latency["export"], rel=1e-4)
            assert entry["baseline_value"] == pytest.approx(latency[peer], rel=1e-4)
            assert entry["ratio"] == pytest.approx(latency["export"] / latency[peer], rel=1e-3)
            assert entry["higher_is_better"] is False
