"""benchmarks/train_throughput.py: the FLOP counter and an end-to-end run on tiny shapes."""

import json
import os
import subprocess
import sys

import pytest

import kmlm

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import common  # noqa: E402
import train_throughput  # noqa: E402


def test_flops_per_token_matches_hand_computation_for_mini():
    # mini: L=4, H=256, F=1024, S=128, P=24, V=8192, worked out by hand:
    #   per layer, weights: 2*(3*256*256 + 256*256 + 2*256*1024) = 2*786,432 = 1,572,864
    #   per layer, attention QK^T and PV: 2 * 2*128*256 = 131,072
    #   4 layers: 4 * (1,572,864 + 131,072) = 6,815,744
    #   head at 24 of 128 positions: (2*256*256 + 2*256*8192) * 24/128 = 4,325,376 * 0.1875 = 811,008
    #   forward 7,626,752 per token; training = 3 x forward = 22,880,256
    flops = train_throughput.training_flops_per_token(4, 256, 1024, 128, 24, 8192)
    assert flops["total"] == pytest.approx(22_880_256)
    assert flops["encoder_weight_matmuls"] == pytest.approx(3 * 4 * 1_572_864)
    assert flops["attention_scores_and_values"] == pytest.approx(3 * 4 * 131_072)
    assert flops["mlm_head"] == pytest.approx(3 * 811_008)
    # 6 x matmul parameters per token (head weighted by P/S) + 12*L*S*H
    params = 4 * (4 * 256 * 256 + 2 * 256 * 1024) + (256 * 256 + 256 * 8192) * 24 / 128
    assert flops["matmul_params_per_token"] == pytest.approx(params)
    assert flops["total"] == pytest.approx(6 * params + 12 * 4 * 128 * 256)


def test_matmul_list_sums_to_the_flop_count_and_matches_the_model():
    layers, hidden, heads, inner, seq, preds, vocab, batch = 2, 64, 4, 256, 32, 5, 300, 3
    matmuls = train_throughput.model_matmuls(layers, hidden, heads, inner, seq, preds, vocab, batch)
    total = train_throughput.training_flops_per_token(layers, hidden, inner, seq, preds, vocab)["total"]
    assert train_throughput.matmul_flops(matmuls) == pytest.approx(total * batch * seq)
    assert len(matmuls) == 3 * (6 * layers + 2)
    # the weight shapes [k, n] of the forward dense matmuls are the real model's kernels
    config = kmlm.ModelConfig(vocabulary_size=vocab, hidden_dim=hidden, num_layers=layers, num_heads=heads,
                              intermediate_dim=inner, max_position=seq)
    model = kmlm.build_mlm_model(config, preds)
    kernels = sorted(tuple(v.shape) for v in model.weights if v.path.endswith("kernel"))
    listed = sorted((k, n) for name, count, m, k, n in matmuls
                    if count == 1 and "." in name and not name.endswith(("grad_input", "grad_weight"))
                    and not name.endswith("head.vocabulary"))
    assert listed == kernels
    assert ("head.vocabulary", 1, batch * preds, hidden, vocab) in matmuls  # tied table, transposed


def test_script_runs_end_to_end_and_emits_well_formed_json(tmp_path):
    report = tmp_path / "report.json"
    completed = subprocess.run(
        [sys.executable, "benchmarks/train_throughput.py", "--preset", "tiny", "--seq-len", "16",
         "--batch-size", "2", "--vocab-size", "64", "--rounds", "2", "--steps", "1", "--warmup", "1",
         "--matmul-repeats", "1", "--arms", "kmlm-nojit,kerashub-nojit", "--torch",
         "--baseline", "kerashub-nojit", "--json", str(report)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    lines = [json.loads(line) for line in completed.stdout.splitlines()]
    for entry in lines:
        common.validate(entry)
    by_kind = {(e["measurement"], e["arm"]): e for e in lines}
    arms = ["kmlm-nojit", "kerashub-nojit"] + (["torch-eager"] if "torch-eager" in completed.stdout else [])
    for arm in arms:
        speed = by_kind[("tokens_per_second", arm)]
        assert speed["baseline"] == "kerashub-nojit" and speed["shape"]["seq_len"] == 16
        assert speed["ratio"] == pytest.approx(speed["value"] / by_kind[("tokens_per_second", "kerashub-nojit")]["value"], rel=1e-4)
        assert ("roofline_fraction", arm) in by_kind
    rooflines = [by_kind[("roofline_tokens_per_second", f"matmuls-{mode}")]["value"] for mode in ("graph", "xla")]
    assert by_kind[("roofline_fraction", "kmlm-nojit")]["baseline_value"] == pytest.approx(max(rooflines), rel=1e-4)
    full = json.loads(report.read_text())
    assert full["roofline"]["flops_per_token"]["total"] == pytest.approx(
        train_throughput.training_flops_per_token(2, 128, 512, 16, full["shape"]["predictions"], 64)["total"])
    assert len(full["arms"]["kmlm-nojit"]["tokens_per_s_chunks"]) == 2
