"""`kmlm export`: the TensorFlow Serving contract, checked on tiny English and Chinese runs."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from kmlm.cli.main import main
from kmlm.layers import SequencePooling
from kmlm.serving.base import TEMP_PREFIX, WARMUP_DIR, WARMUP_FILE, existing_versions
from kmlm.serving.masked_lm import ServingModule, export_run
from kmlm.serving.audit import OpAuditError, audit_saved_model, read_meta_graph, text_ops
from kmlm.inference.fill_mask import FillMask
from kmlm.pipelines import SPECIAL_TOKENS, make_tokenizer, special_ids
from kmlm.run_directory import load_run
from tests.helpers import write_corpus
from tests.cli.test_main import CHINESE, ENGLISH
from tests.inference.test_fill_mask import PREDICTABLE, UNUSED, favour_unused
from tests.tiny_run import VOCABULARY, make_tiny_run, tiny_model

pytestmark = pytest.mark.slow

TINY = ["--preset", "tiny", "--seq-len", "32", "--mask-rate", "0.15", "--batch-size", "8", "--vocab-size", "300", "--log-points", "1",
        "--steps", "12", "--eval-batches", "0", "--no-jit", "--quiet"]
TOP_K = 4
TEXTS = {
    "en": ["The cat jumped over the [MASK].", "a [MASK] and a [MASK]", "THE DOG [MASK] OVER THE WALL", "no mask here"],
    "zh": ["我在公[MASK]里散步。", "今天[MASK]气很好，我们一起去学[MASK]。"],
}
SERVE_EXPORT = os.path.join(os.path.dirname(__file__), "serve_export.py")


def _train(base, name, documents):
    corpus = base / f"{name}.txt"
    write_corpus(corpus, documents)
    out = str(base / f"run_{name}")
    assert main(["pretrain", "--corpus", str(corpus), "--out", out, *TINY]) == 0
    return out


def _id_request(run, texts, seq_len, max_masks):
    """serving_default inputs built in Python: [CLS] pieces [SEP], padded, [MASK] positions."""
    tokenizer = make_tokenizer(run.vocabulary, lowercase=run.config.data.lowercase)
    ids = special_ids(run.vocabulary)
    rows = {name: np.zeros([len(texts), seq_len], np.int32) for name in ("token_ids", "segment_ids", "document_ids")}
    mask_positions = np.zeros([len(texts), max_masks], np.int32)
    for row, text in enumerate(texts):
        tokens = [ids.cls] + [int(i) for i in tokenizer.tokenize(text)] + [ids.sep]
        rows["token_ids"][row, : len(tokens)] = tokens
        rows["document_ids"][row, : len(tokens)] = 1
        masks = [i for i, token in enumerate(tokens) if token == ids.mask]
        mask_positions[row, : len(masks)] = masks
    return {**rows, "mask_positions": mask_positions}


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """Tiny English and Chinese runs, each exported once, and their fresh-process results."""
    base = tmp_path_factory.mktemp("export")
    runs, paths, requests = {}, {}, {}
    for tag, documents in (("en", ENGLISH), ("zh", CHINESE)):
        run_dir = _train(base, tag, documents)
        export = export_run(run_dir, str(base / f"serving_{tag}"), top_k=TOP_K)
        runs[tag] = load_run(run_dir)
        paths[tag] = export.path
        requests[tag] = {
            "fill_mask": {"text": TEXTS[tag]},
            "encode": {"text": TEXTS[tag]},
            "serving_default": {
                name: value.tolist()
                for name, value in _id_request(runs[tag], TEXTS[tag][:2], export.seq_len, export.max_masks).items()
            },
        }
    request_file = base / "requests.json"
    request_file.write_text(json.dumps({"exports": paths, "requests": requests}), encoding="utf-8")
    results_file = base / "results.npz"
    # A fresh process, started outside the repository, that cannot import kmlm or keras.
    result = subprocess.run([sys.executable, SERVE_EXPORT, str(request_file), str(results_file)],
                            capture_output=True, text=True, cwd=str(base), timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    with np.load(results_file) as loaded:
        results = dict(loaded)
    return {"runs": runs, "paths": paths, "requests": requests, "results": results, "base": base}


def _outputs(results, tag, loader, signature):
    prefix = f"{tag}/{loader}/{signature}/"
    return {key[len(prefix):]: value for key, value in results.items() if key.startswith(prefix)}


def test_fresh_process_never_imports_kmlm_or_keras(exports):
    assert exports["results"]["leaked_modules"].tolist() == []


def test_signature_metadata(exports):
    meta_graph = read_meta_graph(exports["paths"]["en"])
    assert list(meta_graph.meta_info_def.tags) == ["serve"]
    signatures = {name: s for name, s in meta_graph.signature_def.items() if not name.startswith("__")}
    assert sorted(signatures) == ["encode", "fill_mask", "serving_default"]
    S, M, K, H = 32, 8, TOP_K, 128
    expected = {
        "serving_default": (
            {"token_ids": ("int32", [-1, S]), "segment_ids": ("int32", [-1, S]), "document_ids": ("int32", [-1, S]),
             "mask_positions": ("int32", [-1, M])},
            {"top_k_ids": ("int32", [-1, M, K]), "top_k_scores": ("float32", [-1, M, K])},
        ),
        "fill_mask": (
            {"text": ("string", [-1])},
            {"top_k_tokens": ("string", [-1, M, K]), "top_k_ids": ("int32", [-1, M, K]),
             "top_k_scores": ("float32", [-1, M, K]), "mask_positions": ("int32", [-1, M]),
             "mask_count": ("int32", [-1]), "valid": ("bool", [-1, M])},
        ),
        "encode": (
            {"text": ("string", [-1])},
            {"pooled_embedding": ("float32", [-1, H]), "cls_embedding": ("float32", [-1, H])},
        ),
    }
    for name, (inputs, outputs) in expected.items():
        signature = signatures[name]
        assert signature.method_name == "tensorflow/serving/predict"
        for infos, want in ((signature.inputs, inputs), (signature.outputs, outputs)):
            got = {
                key: (tf.dtypes.as_dtype(info.dtype).name, [d.size for d in info.tensor_shape.dim])
                for key, info in infos.items()
            }
            assert got == want, name
            assert all(info.WhichOneof("encoding") == "name" and info.name for info in infos.values())


def test_both_loaders_agree_with_each_other(exports):
    results = exports["results"]
    for tag in ("en", "zh"):
        for signature in ("serving_default", "fill_mask", "encode"):
            eager = _outputs(results, tag, "eager", signature)
            session = _outputs(results, tag, "session", signature)
            assert sorted(eager) == sorted(session) and eager
            for name in eager:
                if eager[name].dtype.kind == "f":
                    np.testing.assert_allclose(eager[name], session[name], rtol=1e-5, atol=1e-6)
                else:
                    np.testing.assert_array_equal(eager[name], session[name])


def _softmax_top_k(logits, vocabulary, k):
    logits = logits.astype(np.float64)
    logits[..., [i for i, token in enumerate(vocabulary) if token in SPECIAL_TOKENS]] = -np.inf
    scores = np.exp(logits - logits.max(-1, keepdims=True))
    scores /= scores.sum(-1, keepdims=True)
    best = np.argsort(-scores, axis=-1, kind="stable")[..., :k]
    return best, np.take_along_axis(scores, best, -1)


@pytest.mark.parametrize("loader", ["eager", "session"])
def test_serving_default_matches_the_keras_model(exports, loader):
    for tag in ("en", "zh"):
        run, request = exports["runs"][tag], exports["requests"][tag]["serving_default"]
        logits = run.model({name: tf.constant(value, tf.int32) for name, value in request.items()}, training=False)
        ids, scores = _softmax_top_k(logits.numpy(), run.vocabulary, TOP_K)
        served = _outputs(exports["results"], tag, loader, "serving_default")
        np.testing.assert_allclose(served["top_k_scores"], scores, rtol=1e-4, atol=1e-6)
        np.testing.assert_array_equal(served["top_k_ids"], ids)


@pytest.mark.parametrize("loader", ["eager", "session"])
def test_fill_mask_matches_the_python_fill_mask(exports, loader):
    for tag in ("en", "zh"):
        run = exports["runs"][tag]
        predictor = FillMask(run.model, run.vocabulary, lowercase=run.config.data.lowercase)
        served = _outputs(exports["results"], tag, loader, "fill_mask")
        for row, text in enumerate(TEXTS[tag]):
            expected = predictor(text, top_k=TOP_K) if "[MASK]" in text else []
            count = len(expected)
            assert served["mask_count"][row] == count
            assert served["valid"][row].tolist() == [True] * count + [False] * (8 - count)
            assert served["mask_positions"][row, :count].tolist() == [mask["position"] for mask in expected]
            assert (served["mask_positions"][row, count:] == -1).all()
            for slot, mask in enumerate(expected):
                assert served["top_k_tokens"][row, slot].tolist() == [p["token"] for p in mask["predictions"]]
                assert served["top_k_ids"][row, slot].tolist() == [p["id"] for p in mask["predictions"]]
                np.testing.assert_allclose(served["top_k_scores"][row, slot],
                                           [p["score"] for p in mask["predictions"]], rtol=1e-4, atol=1e-6)
            assert (served["top_k_ids"][row, count:] == -1).all() and (served["top_k_tokens"][row, count:] == "").all()
            assert (served["top_k_scores"][row, count:] == 0).all()


def test_fill_mask_agrees_with_the_cli(exports, capsys):
    for tag, text in (("en", TEXTS["en"][0]), ("zh", TEXTS["zh"][0])):
        assert main(["fill-mask", exports["runs"][tag].path, text, "--top-k", str(TOP_K), "--json"]) == 0
        cli = json.loads(capsys.readouterr().out)["masks"][0]["predictions"]
        served = _outputs(exports["results"], tag, "session", "fill_mask")
        assert served["top_k_tokens"][0, 0].tolist() == [p["token"] for p in cli]


@pytest.mark.parametrize("loader", ["eager", "session"])
def test_encode_matches_the_keras_encoder(exports, loader):
    for tag in ("en", "zh"):
        run = exports["runs"][tag]
        tokenizer = make_tokenizer(run.vocabulary, lowercase=run.config.data.lowercase)
        ids = special_ids(run.vocabulary)
        served = _outputs(exports["results"], tag, loader, "encode")
        for row, text in enumerate(TEXTS[tag]):
            tokens = [ids.cls] + [int(i) for i in tokenizer.tokenize(text)] + [ids.sep]
            features = {"token_ids": tf.constant([tokens]), "segment_ids": tf.zeros([1, len(tokens)], tf.int32),
                        "document_ids": tf.ones([1, len(tokens)], tf.int32)}
            sequence = run.model.encoder(features, training=False).numpy()[0]  # unpadded: no mask needed
            np.testing.assert_allclose(served["pooled_embedding"][row], sequence.mean(0), rtol=1e-4, atol=1e-5)
            np.testing.assert_allclose(served["cls_embedding"][row], sequence[0], rtol=1e-4, atol=1e-5)


def test_fill_mask_refuses_what_it_cannot_answer_and_encode_truncates(exports):
    run = exports["runs"]["en"]
    loaded = tf.saved_model.load(exports["paths"]["en"])
    long_text = " ".join(["the cat jumped over the fence"] * 8) + " [MASK]"
    with pytest.raises(tf.errors.InvalidArgumentError, match="longer than the seq_len=32 tokens of this export"):
        loaded.signatures["fill_mask"](text=tf.constant([long_text]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="more \\[MASK\\] tokens than the max_masks=8 of this export"):
        loaded.signatures["fill_mask"](text=tf.constant([" ".join(["[MASK]"] * 9)]))
    pooled = loaded.signatures["encode"](text=tf.constant([long_text]))["pooled_embedding"].numpy()[0]
    ids = special_ids(run.vocabulary)
    pieces = [int(i) for i in make_tokenizer(run.vocabulary).tokenize(long_text)]
    tokens = [ids.cls] + pieces[:30] + [ids.sep]  # the first S - 2 pieces
    features = {"token_ids": tf.constant([tokens]), "segment_ids": tf.zeros([1, 32], tf.int32),
                "document_ids": tf.ones([1, 32], tf.int32)}
    expected = run.model.encoder(features, training=False).numpy()[0].mean(0)
    np.testing.assert_allclose(pooled, expected, rtol=1e-4, atol=1e-5)


def test_warmup_records_replay_through_the_session(exports):
    results = exports["results"]
    for tag in ("en", "zh"):
        replayed = sorted({key.split("/")[3] for key in results if key.startswith(f"{tag}/warmup/")})
        assert replayed == ["encode", "fill_mask", "serving_default"]
        assert results[f"{tag}/warmup/1/fill_mask/top_k_tokens"].tolist() == [1, 8, TOP_K]
        assert results[f"{tag}/warmup/2/encode/pooled_embedding"].tolist() == [1, 128]
    assert os.path.isfile(os.path.join(exports["paths"]["en"], WARMUP_DIR, WARMUP_FILE))


def test_audit_lists_the_text_ops(exports):
    ops = audit_saved_model(exports["paths"]["en"])
    for name in ("fill_mask", "encode"):
        assert {"FastWordpieceTokenizeWithOffsets", "RegexSplitWithOffsets"} <= set(ops[name]) & text_ops()
    assert not set(ops["serving_default"]) & text_ops()  # the ids signature needs core TF only


def _save(tmp_path, function, name):
    module = tf.Module()
    module.f = function
    path = str(tmp_path / name)
    tf.saved_model.save(module, path, signatures={"serving_default": function.get_concrete_function()})
    return path


def test_audit_rejects_python_callbacks_xla_and_unknown_ops(tmp_path):
    spec = [tf.TensorSpec([None], tf.float32)]
    callback = tf.function(lambda x: {"y": tf.py_function(lambda v: v * 2, [x], tf.float32)}, input_signature=spec)
    with pytest.raises(OpAuditError, match="EagerPyFunc, which TF Serving cannot run"):
        audit_saved_model(_save(tmp_path, callback, "callback"))
    compiled = tf.function(lambda x: {"y": x * 2}, input_signature=spec, jit_compile=True)
    with pytest.raises(OpAuditError, match="must be compiled with XLA"):
        audit_saved_model(_save(tmp_path, compiled, "xla"))
    # An op from a library that TF Serving does not link: rename an op in a clean export.
    path = _save(tmp_path, tf.function(lambda x: {"y": x * 2}, input_signature=spec), "unknown")
    audit_saved_model(path)
    from tensorflow.core.protobuf import saved_model_pb2

    saved_model = saved_model_pb2.SavedModel()
    with open(os.path.join(path, "saved_model.pb"), "rb") as f:
        saved_model.ParseFromString(f.read())
    for function in saved_model.meta_graphs[0].graph_def.library.function:
        for node in function.node_def:
            if node.op == "Mul":
                node.op = "MysteryOp"
    with open(os.path.join(path, "saved_model.pb"), "wb") as f:
        f.write(saved_model.SerializeToString())
    with pytest.raises(OpAuditError, match="op 'MysteryOp', which is neither core TensorFlow nor TensorFlow Text"):
        audit_saved_model(path)


def test_versions_count_up_and_are_never_overwritten(exports, capsys):
    base = os.path.dirname(exports["paths"]["en"])
    run_dir = exports["runs"]["en"].path
    assert main(["export", run_dir, "--out", base, "--top-k", "2"]) == 0
    assert "wrote version 2" in capsys.readouterr().out
    assert existing_versions(base) == [1, 2]
    before = os.path.getmtime(os.path.join(base, "1", "saved_model.pb"))
    assert main(["export", run_dir, "--out", base, "--version", "1"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"kmlm export: error: version 1 already exists in {base!r}; versions are never overwritten: "
        "pass another --version or leave it out to write version 3"
    )
    assert os.path.getmtime(os.path.join(base, "1", "saved_model.pb")) == before
    assert sorted(os.listdir(base)) == ["1", "2"]


def test_a_failure_before_the_rename_leaves_nothing(exports, monkeypatch, tmp_path):
    def fail(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr("kmlm.serving.base.write_warmup_requests", fail)
    base = tmp_path / "serving"
    with pytest.raises(RuntimeError, match="disk full"):
        export_run(exports["runs"]["en"], str(base))
    assert os.listdir(base) == []


def test_a_kill_during_export_leaves_no_version(exports, tmp_path):
    base = tmp_path / "serving"
    command = [sys.executable, "-m", "kmlm", "export", exports["runs"]["en"].path, "--out", str(base)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and process.poll() is None:
        if base.is_dir() and any(name.startswith(TEMP_PREFIX) for name in os.listdir(base)):
            break
        time.sleep(0.02)
    assert process.poll() is None, "the export finished before it could be killed"
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert existing_versions(str(base)) == []
    assert [name for name in os.listdir(base) if not name.startswith(TEMP_PREFIX)] == []
    # The next export clears the abandoned temporary directory and writes version 1.
    assert export_run(exports["runs"]["en"], str(base)).version == 1
    assert os.listdir(base) == ["1"]


def test_saved_model_cli_shows_the_export(exports):
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    result = subprocess.run([cli, "show", "--dir", exports["paths"]["zh"], "--all"], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    for line in ("signature_def['fill_mask']:", "inputs['text'] tensor_info:", "outputs['top_k_tokens'] tensor_info:",
                 "Method name is: tensorflow/serving/predict"):
        assert line in result.stdout


def test_export_errors_are_one_line(exports, tmp_path, capsys):
    run_dir = exports["runs"]["en"].path
    assert main(["export", run_dir, "--out", str(tmp_path / "s"), "--seq-len", "600"]) == 2
    assert capsys.readouterr().err.strip() == (
        "kmlm export: error: seq_len=600 is outside [3, 512]: the model's max_position is 512; "
        "export with --seq-len <= 512"
    )
    assert main(["export", str(tmp_path), "--out", str(tmp_path / "s")]) == 2
    assert "is not a kmlm run directory" in capsys.readouterr().err
    assert not (tmp_path / "s").exists() or existing_versions(str(tmp_path / "s")) == []


def test_export_has_help():
    result = subprocess.run([sys.executable, "-m", "kmlm", "export", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.startswith("usage: kmlm export")
    assert "--seq-len" in result.stdout and "--top-k" in result.stdout and "--version" in result.stdout


def test_text_signatures_pad_each_request_only_to_its_longest_text(exports):
    """A short text alone (padded to 16) and next to a long one (padded to 32) gets the same answers."""
    loaded = tf.saved_model.load(exports["paths"]["en"])
    short, long_text = "the cat [MASK] .", " ".join(["the cat jumped over the fence"] * 3) + " [MASK]"
    alone = {k: v.numpy() for k, v in loaded.signatures["fill_mask"](text=tf.constant([short])).items()}
    batched = {k: v.numpy() for k, v in loaded.signatures["fill_mask"](text=tf.constant([short, long_text])).items()}
    assert alone["mask_count"][0] == 1
    np.testing.assert_array_equal(alone["top_k_ids"][0], batched["top_k_ids"][0])
    np.testing.assert_array_equal(alone["mask_positions"][0], batched["mask_positions"][0])
    np.testing.assert_allclose(alone["top_k_scores"][0], batched["top_k_scores"][0], rtol=1e-5, atol=1e-6)
    encoded_alone = loaded.signatures["encode"](text=tf.constant([short]))["pooled_embedding"].numpy()[0]
    encoded_batched = loaded.signatures["encode"](text=tf.constant([short, long_text]))["pooled_embedding"].numpy()[0]
    np.testing.assert_allclose(encoded_alone, encoded_batched, rtol=1e-5, atol=1e-6)


def test_served_fill_mask_never_proposes_unused_tokens(tmp_path):
    """A converted BERT vocabulary holds [unused0]...; the export must skip it as FillMask does."""
    run = load_run(make_tiny_run(str(tmp_path / "run"), seed=1))
    model = favour_unused(run.model)
    text = "the cat [MASK] on a [MASK] ."
    too_many = len(PREDICTABLE) + 1
    with pytest.raises(ValueError, match=f"top_k={too_many} must be in \\[1, {len(PREDICTABLE)}\\]"):
        export_run(run, str(tmp_path / "refused"), top_k=too_many)
    export = export_run(run, str(tmp_path / "serving"), seq_len=16, top_k=len(PREDICTABLE), max_masks=4)
    loaded = tf.saved_model.load(export.path)
    served = {k: v.numpy() for k, v in loaded.signatures["fill_mask"](text=tf.constant([text])).items()}
    expected = FillMask(model, VOCABULARY)(text, top_k=len(PREDICTABLE))
    assert served["mask_count"].tolist() == [2]
    for slot, mask in enumerate(expected):
        assert sorted(served["top_k_ids"][0, slot].tolist()) == PREDICTABLE
        assert served["top_k_ids"][0, slot].tolist() == [p["id"] for p in mask["predictions"]]
        assert b"[unused0]" not in served["top_k_tokens"][0, slot].tolist()
    ids = _id_request(run, [text], 16, 4)
    by_ids = loaded.signatures["serving_default"](**{k: tf.constant(v) for k, v in ids.items()})
    assert UNUSED not in by_ids["top_k_ids"].numpy()[0, :2]
    np.testing.assert_array_equal(by_ids["top_k_ids"].numpy()[0, :2], served["top_k_ids"][0, :2])


def test_pooled_embedding_of_an_empty_text_or_a_padding_row_is_sequence_poolings(tmp_path):
    """Mean pooling is SequencePooling's: an empty text pools [CLS] [SEP], a row of padding
    only pools to zeros (not 0 / 0), in `encode` and in an embeddings-only `serving_default`."""
    model, ids = tiny_model(seed=4), special_ids(VOCABULARY)
    pooling = SequencePooling("mean")
    module = ServingModule(model, VOCABULARY, lowercase=True, seq_len=16, max_masks=4, top_k=3, masked_lm=False)
    loaded = tf.saved_model.load(module.write_version(str(tmp_path / "serving"))[0])

    rows = np.full([2, 16], ids.pad, np.int32)
    rows[1, :3] = [ids.cls, VOCABULARY.index("cat"), ids.sep]
    document_ids = np.zeros([2, 16], np.int32)
    document_ids[1, :3] = 1
    features = {"token_ids": rows, "segment_ids": np.zeros_like(rows), "document_ids": document_ids}
    served = loaded.signatures["serving_default"](**{k: tf.constant(v) for k, v in features.items()})
    expected = pooling(model.encoder(features, training=False), document_ids).numpy()
    pooled = served["pooled_embedding"].numpy()
    assert np.isfinite(pooled).all() and (pooled[0] == 0).all()
    np.testing.assert_allclose(pooled, expected, rtol=1e-5, atol=1e-6)

    encoded = loaded.signatures["encode"](text=tf.constant(["", "cat"]))["pooled_embedding"].numpy()
    texts = np.full([2, 16], ids.pad, np.int32)
    texts[0, :2] = [ids.cls, ids.sep]
    texts[1, :3] = [ids.cls, VOCABULARY.index("cat"), ids.sep]
    text_documents = (np.arange(16) < np.array([[2], [3]])).astype(np.int32)
    text_features = {"token_ids": texts, "segment_ids": np.zeros_like(texts), "document_ids": text_documents}
    expected = pooling(model.encoder(text_features, training=False), text_documents).numpy()
    np.testing.assert_allclose(encoded, expected, rtol=1e-5, atol=1e-6)
