"""Independent NumPy implementations of the encoder math, for comparison in tests."""

import math

import numpy as np

_erf = np.vectorize(math.erf)


def gelu(x):
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


def layer_norm(x, gamma, beta, epsilon):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + epsilon) * gamma + beta


def softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def self_attention(x, document_ids, qkv_kernel, qkv_bias, output_kernel, output_bias, num_heads):
    """Per-example, per-head loops: deliberately unlike the vectorized layer."""
    batch, seq_len, hidden = x.shape
    head_dim = hidden // num_heads
    out = np.zeros_like(x)
    for b in range(batch):
        qkv = x[b] @ qkv_kernel + qkv_bias
        q, k, v = qkv[:, :hidden], qkv[:, hidden:2 * hidden], qkv[:, 2 * hidden:]
        context = np.zeros((seq_len, hidden))
        for h in range(num_heads):
            cols = slice(h * head_dim, (h + 1) * head_dim)
            scores = q[:, cols] @ k[:, cols].T / math.sqrt(head_dim)
            for i in range(seq_len):
                for j in range(seq_len):
                    if not (document_ids[b, i] == document_ids[b, j] and document_ids[b, j] != 0):
                        scores[i, j] = -1e9
            context[:, cols] = softmax(scores) @ v[:, cols]
        out[b] = context @ output_kernel + output_bias
    return out


def feed_forward(x, inner_kernel, inner_bias, output_kernel, output_bias, gated=False):
    h = x @ inner_kernel + inner_bias
    if gated:
        half = h.shape[-1] // 2
        h = gelu(h[..., :half]) * h[..., half:]
    else:
        h = gelu(h)
    return h @ output_kernel + output_bias


def weights_of(layer):
    """A layer's variables by their short name, as float64 NumPy arrays."""
    return {w.name: np.asarray(w.numpy(), np.float64) for w in layer.weights}
