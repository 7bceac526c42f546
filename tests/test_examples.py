import math
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_pretrain_example_runs_model_fit(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(
        "\n\n".join(f"the {w} sat on the mat number {i} and looked at the {w}" for i, w in
                    enumerate(["cat", "dog", "bird", "fish", "fox"] * 20)),
        encoding="utf-8",
    )
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "examples", "pretrain.py"), "--corpus", str(corpus), "--preset", "tiny",
         "--steps", "6", "--seq-len", "32", "--batch-size", "4", "--vocab-size", "200"],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    match = re.search(r"final loss ([0-9.]+), masked accuracy ([0-9.]+)", result.stdout)
    assert match, result.stdout[-2000:]
    assert math.isfinite(float(match.group(1))) and 0.0 <= float(match.group(2)) <= 1.0
