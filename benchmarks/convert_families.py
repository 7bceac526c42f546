"""How exactly `kmlm convert` reproduces each family, and what each costs on this CPU.

For DistilBERT, RoBERTa and ALBERT (and BERT for comparison) it builds a random-weight
checkpoint with transformers and tokenizer files trained on a small mixed English/Chinese
corpus (the builders of tests/interop/test_families.py), converts it, and prints:

- the max abs difference of the hidden states of real tokens against PyTorch, per text
  (padded batch of an English and a Chinese sentence);
- how many texts of the mixed tokenizer set give the same ids as the Hugging Face fast
  tokenizer;
- with `--timing`: parameters, fill-mask latency (median of interleaved rounds) and
  embedding throughput at one comparable size (L4/H256, ALBERT and ELECTRA with E=128), and tokens per
  Chinese character of each family's tokenizer.

Run under the shared-machine lock:

    flock /tmp/kmlm-bench.lock python benchmarks/convert_families.py [--timing]
"""

import argparse
import json
import pathlib
import statistics
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from tests.interop import test_families as families  # noqa: E402  (the checkpoint builders)

CHINESE = "我们今天学习自然语言处理，机器学习很有意思！北京是中国的首都。"


def _bert(path):
    tokenizer = families._wordpiece_files(path)
    config = families.transformers.BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2,
                                              num_attention_heads=4, intermediate_size=48, max_position_embeddings=64)
    model = families._randomize(families.transformers.BertForMaskedLM(config))
    model.save_pretrained(path)
    return model, model.bert, tokenizer


BUILDERS = {"bert": _bert, **families.FAMILIES}


def exactness(root):
    torch = families.torch
    from kmlm.interop.huggingface import convert_checkpoint
    from kmlm.pipelines import make_tokenizer, special_ids
    from kmlm.run_directory import load_run

    report = {}
    for family, build in BUILDERS.items():
        hf = root / family / "hf"
        hf.mkdir(parents=True)
        model, base, tokenizer = build(hf)
        convert_checkpoint(str(hf), str(root / family / "run"), seq_len=32, verbose=0)
        run = load_run(str(root / family / "run"))
        ids, mask = families._batch(tokenizer, families.ENGLISH_AND_CHINESE)
        with torch.no_grad():
            expected = base(input_ids=torch.tensor(ids, dtype=torch.long),
                            attention_mask=torch.tensor(mask)).last_hidden_state.numpy()
        hidden = np.asarray(run.encoder(families._kmlm_features(ids, mask), training=False))
        real = mask.astype(bool)
        differences = [float(np.abs(hidden[i] - expected[i])[real[i]].max()) for i in range(len(ids))]
        ours = make_tokenizer(run.vocabulary, lowercase=run.config.data.lowercase)
        sids = special_ids(run.vocabulary)
        rows = ours.tokenize(families.tf.constant(families.TEXTS))
        rows = rows.to_list() if hasattr(rows, "to_list") else rows
        same = [[sids.cls] + [int(i) for i in row] + [sids.sep] == tokenizer(text)["input_ids"]
                for text, row in zip(families.TEXTS, rows)]
        report[family] = {"max_abs_english": differences[0], "max_abs_chinese": differences[1],
                          "tokenizer_same": f"{sum(same)}/{len(same)}",
                          "tokenizer_differs_on": [t for t, s in zip(families.TEXTS, same) if not s]}
        print(family, json.dumps(report[family], ensure_ascii=False), flush=True)
    return report


def _timed_models(root):
    """Random checkpoints of one comparable size per family, converted: {family: run path}."""
    transformers = families.transformers
    size = dict(num_hidden_layers=4, hidden_size=256, num_attention_heads=4, intermediate_size=1024,
                max_position_embeddings=130)
    configs = {
        "bert": lambda v: transformers.BertForMaskedLM(transformers.BertConfig(vocab_size=v, **size)),
        "distilbert": lambda v: transformers.DistilBertForMaskedLM(transformers.DistilBertConfig(
            vocab_size=v, n_layers=4, dim=256, n_heads=4, hidden_dim=1024, max_position_embeddings=130)),
        "roberta": lambda v: transformers.RobertaForMaskedLM(transformers.RobertaConfig(
            vocab_size=v, type_vocab_size=1, pad_token_id=1, bos_token_id=0, eos_token_id=2, **size)),
        "albert": lambda v: transformers.AlbertForMaskedLM(transformers.AlbertConfig(
            vocab_size=v, embedding_size=128, **size)),
        "electra": lambda v: transformers.ElectraForMaskedLM(transformers.ElectraConfig(
            vocab_size=v, embedding_size=128, **size)),
    }
    tokenizer_of = {"bert": families._wordpiece_files, "distilbert": families._wordpiece_files,
                    "electra": families._wordpiece_files}
    from kmlm.interop.huggingface import convert_checkpoint

    runs = {}
    for family, make in configs.items():
        hf = root / f"timed_{family}" / "hf"
        hf.mkdir(parents=True)
        if family in tokenizer_of:
            tokenizer = tokenizer_of[family](hf)
        else:
            _, _, tokenizer = BUILDERS[family](hf)  # trains its tokenizer; the small model is replaced below
        model = make(len(tokenizer)).eval()
        for name in ("model.safetensors", "config.json"):
            (hf / name).unlink(missing_ok=True)
        model.save_pretrained(hf)
        convert_checkpoint(str(hf), str(root / f"timed_{family}" / "run"), seq_len=128, verbose=0)
        runs[family] = (str(root / f"timed_{family}" / "run"), tokenizer)
    return runs


def timing(root, rounds):
    from kmlm.inference.fill_mask import FillMask
    from kmlm.run_directory import load_run
    from kmlm.tasks.finetune import TaskInfo, Tasker
    from kmlm.tasks.models import build_sentence_encoder

    runs = _timed_models(root)
    loaded = {}
    for family, (path, tokenizer) in runs.items():
        run = load_run(path)
        info = TaskInfo(task="similarity", labels=[], seq_len=128, lowercase=run.config.data.lowercase)
        fill = FillMask(run.model, run.vocabulary, lowercase=run.config.data.lowercase, max_length=128)
        embedder = Tasker(build_sentence_encoder(run.encoder, pooling="mean"), run.vocabulary, info)
        chinese_tokens = len(tokenizer(CHINESE, add_special_tokens=False)["input_ids"])
        loaded[family] = (run, fill, embedder, chinese_tokens)
        fill("the cat sat on the [MASK].")  # warm-up: graphs traced once
        embedder.embed(families.CORPUS[:64])
    sentences = families.CORPUS[:120]
    latency = {f: [] for f in loaded}
    throughput = {f: [] for f in loaded}
    for _ in range(rounds):  # interleaved: every family once per round
        for family, (_, fill, embedder, _) in loaded.items():
            start = time.perf_counter()
            fill("the cat sat on the [MASK].")
            latency[family].append(time.perf_counter() - start)
            start = time.perf_counter()
            embedder.embed(sentences)
            throughput[family].append(len(sentences) / (time.perf_counter() - start))
    report = {}
    for family, (run, _, _, chinese_tokens) in loaded.items():
        report[family] = {"parameters": int(run.model.count_params()),
                          "fill_mask_ms": round(1000 * statistics.median(latency[family]), 1),
                          "embed_sentences_per_s": round(statistics.median(throughput[family]), 1),
                          "chinese_tokens_per_char": round(chinese_tokens / len(CHINESE), 2)}
        print(family, json.dumps(report[family]), flush=True)
    return report


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--timing", action="store_true", help="also time fill-mask and embed at L4/H256")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds (median reported)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = pathlib.Path(tmp)
        exactness(root)
        if args.timing:
            timing(root, args.rounds)


if __name__ == "__main__":
    main()
