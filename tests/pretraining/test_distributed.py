"""tf.distribute: TF_CONFIG checks, per-worker input, MirroredStrategy over two logical CPU
devices against one device, two MultiWorkerMirroredStrategy workers on loopback, and the
tf.data service on a local dispatcher and worker."""

import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from kmlm.pretraining.distributed import read_tf_config
from tests.helpers import write_corpus
from tests.cli.test_main import ENGLISH

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HINT = (
    'set it to e.g. {"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", "index": 0}}'
)


@pytest.mark.parametrize(
    "text, message",
    [
        ("", f"--strategy multi-worker needs the TF_CONFIG environment variable; {HINT}"),
        ("{cluster: 1}", "TF_CONFIG is not valid JSON (Expecting property name enclosed in double quotes: "
                         f"line 1 column 2 (char 1)); {HINT}"),
        ('{"task": {"type": "worker", "index": 0}}', f'TF_CONFIG has no "cluster" object; {HINT}'),
        ('{"cluster": {"worker": "a:1"}, "task": {"type": "worker", "index": 0}}',
         "TF_CONFIG cluster.worker must be a list of \"host:port\" strings, got 'a:1'"),
        ('{"cluster": {"worker": ["a:1"], "ps": ["b:1"]}, "task": {"type": "worker", "index": 0}}',
         "TF_CONFIG cluster has roles ['ps'] that multi-worker training does not use; use chief and worker"),
        ('{"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 2}}',
         "TF_CONFIG task index 2 is outside the 2 worker address(es) of the cluster; use 0 to 1"),
        ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "evaluator"}}',
         "TF_CONFIG task {'type': 'evaluator'} must be {\"type\": \"worker\" or \"chief\", \"index\": N}"),
    ],
)
def test_malformed_tf_config_is_refused_with_what_is_wrong(text, message):
    with pytest.raises(ValueError) as error:
        read_tf_config(text)
    assert str(error.value) == message


def test_tf_config_with_a_chief():
    text = '{"cluster": {"chief": ["c:1"], "worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 1}}'
    assert read_tf_config(text) == ("worker", 1, ["c:1", "a:1", "b:1"])


def test_corpus_is_sharded_by_file_and_by_document_for_one_file(tmp_path):
    import tensorflow as tf

    from kmlm.pipelines import load_documents

    folder = tmp_path / "corpus"
    folder.mkdir()
    for number in range(3):
        write_corpus(folder / f"part{number}.txt", [f"file {number} doc {i}" for i in range(4)])

    def read(source, pipeline, pipelines=2):
        context = tf.distribute.InputContext(num_input_pipelines=pipelines, input_pipeline_id=pipeline)
        return [d.decode() for d in load_documents(source, input_context=context).as_numpy_iterator()]

    first, second = read(str(folder), 0), read(str(folder), 1)
    assert {d.split(" doc")[0] for d in first} == {"file 0", "file 2"}  # whole files per worker
    assert {d.split(" doc")[0] for d in second} == {"file 1"}
    single = str(folder / "part0.txt")
    assert read(single, 0) == ["file 0 doc 0", "file 0 doc 2"]  # every 2nd document
    assert read(single, 1) == ["file 0 doc 1", "file 0 doc 3"]


MIRRORED_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    import numpy as np
    from kmlm import ModelConfig, build_mlm_model, compile_for_pretraining

    STEPS, BATCH = 5, 8
    config = ModelConfig(vocabulary_size=64, hidden_dim=16, num_layers=1, num_heads=2, intermediate_dim=32,
                         max_position=16, dropout=0.0, attention_dropout=0.0)
    rng = np.random.default_rng(0)
    rows = STEPS * BATCH
    x = {"token_ids": rng.integers(5, 64, (rows, 16)).astype("int32"), "segment_ids": np.zeros((rows, 16), "int32"),
         "document_ids": np.ones((rows, 16), "int32"), "mask_positions": rng.integers(0, 16, (rows, 8)).astype("int32")}
    y = rng.integers(5, 64, (rows, 8)).astype("int32")
    # Uneven masked slots: the two halves of a global batch hold different numbers of them.
    w = (rng.random((rows, 8)) < np.linspace(0.2, 0.9, rows)[:, None]).astype("float32")

    def train(strategy, initial=None):
        keras.utils.set_random_seed(0)
        dataset = tf.data.Dataset.from_tensor_slices((x, y, w)).batch(BATCH)
        with strategy.scope():
            model = build_mlm_model(config, 8)
            if initial is not None:
                model.set_weights(initial)
            compile_for_pretraining(model, learning_rate=1e-2, total_steps=STEPS, jit_compile=False)
        start = [v.numpy() for v in model.weights]
        history = model.fit(dataset, epochs=1, verbose=0)
        return start, [v.numpy() for v in model.weights], history.history["loss"][-1], model

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    initial, single, single_loss, _ = train(tf.distribute.OneDeviceStrategy("/cpu:0"))
    _, mirrored, mirrored_loss, model = train(strategy, initial)
    diff = max(float(np.max(np.abs(a - b))) for a, b in zip(single, mirrored))
    moved = max(float(np.max(np.abs(a - b))) for a, b in zip(initial, single))
    print(json.dumps({"replicas": strategy.num_replicas_in_sync, "max_abs_diff": diff, "moved": moved,
                      "loss": [single_loss, mirrored_loss],
                      "iterations": int(model.optimizer.iterations.numpy())}))
    """
)


@pytest.mark.slow
def test_mirrored_over_two_devices_matches_one_device_with_the_same_global_batch():
    result = subprocess.run([sys.executable, "-c", MIRRORED_SCRIPT], capture_output=True, text=True, timeout=300,
                            cwd=ROOT, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    print("mirrored vs one device:", figures)
    assert figures["replicas"] == 2 and figures["iterations"] == 5
    assert figures["moved"] > 1e-3  # training changed the weights by far more than the tolerance
    assert figures["max_abs_diff"] < 1e-5
    assert figures["loss"][0] == pytest.approx(figures["loss"][1], rel=1e-5)


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def _run_workers(command, count, timeout):
    """Runs `command` as `count` workers of one loopback cluster; kills them all on failure."""
    workers = [f"127.0.0.1:{port}" for port in _free_ports(count)]
    processes = []
    try:
        for index in range(count):
            tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
            env = dict(os.environ, TF_CONFIG=json.dumps(tf_config), TF_CPP_MIN_LOG_LEVEL="2")
            processes.append(subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.PIPE,
                                              stderr=subprocess.STDOUT, text=True, start_new_session=True))
        return [(process.wait(timeout=timeout), process.stdout.read()) for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()


@pytest.fixture(scope="module")
def corpus_and_vocab(tmp_path_factory):
    """A small English corpus and a vocabulary learned from it (multi-worker needs --vocab)."""
    from kmlm.cli.main import main

    folder = tmp_path_factory.mktemp("corpus")
    corpus = write_corpus(folder / "corpus.txt", ENGLISH)
    vocab = str(folder / "vocab.txt")
    assert main(["vocab", "--corpus", corpus, "--size", "300", "--out", vocab]) == 0
    return corpus, vocab


@pytest.mark.slow
def test_two_multi_worker_processes_train_and_end_with_identical_weights(corpus_and_vocab, tmp_path):
    from kmlm.run_directory import load_model_safely

    corpus, vocab = corpus_and_vocab
    out = tmp_path / "run"
    command = [sys.executable, "-m", "kmlm", "pretrain", "--strategy", "multi-worker", "--corpus", corpus,
               "--vocab", vocab, "--out", str(out), "--preset", "tiny", "--seq-len", "32", "--batch-size", "8",
               "--steps", "6", "--log-points", "2", "--eval-batches", "1", "--no-jit", "--quiet"]
    results = _run_workers(command, 2, timeout=400)
    for code, output in results:
        assert code == 0, output[-3000:]
    assert "the chief worker wrote the run directory" in results[1][1]
    rows = (out / "metrics.csv").read_text().strip().splitlines()
    assert len(rows) == 3 and "val_loss" in rows[0]  # header + 2 epochs, from the chief only
    chief = load_model_safely(str(out / "model.keras"), compile=True)
    worker = load_model_safely(str(out / "model.keras"), compile=True)
    worker.load_weights(str(out / "worker-1.weights.h5"))
    assert int(chief.optimizer.iterations.numpy()) == 6
    diff = max(float(np.max(np.abs(a.numpy() - b.numpy()))) for a, b in zip(chief.weights, worker.weights))
    print("multi-worker: max abs weight difference between the workers:", diff)
    assert diff == 0.0


DATA_SERVICE_SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    import numpy as np
    import tensorflow as tf
    from kmlm.cli.main import main
    from kmlm.pretraining.distributed import use_data_service
    from kmlm.pipelines import load_documents, load_vocabulary, mlm_dataset

    corpus, vocab, out = sys.argv[1:4]
    service = tf.data.experimental.service
    dispatcher = service.DispatchServer(service.DispatcherConfig(port=0, protocol="grpc"))
    address = dispatcher.target.split("://")[1]
    worker = service.WorkerServer(service.WorkerConfig(dispatcher_address=address, worker_address="127.0.0.1:%port%"))

    local = mlm_dataset(load_documents(corpus), load_vocabulary(vocab), seq_len=32, batch_size=4)
    served = use_data_service(local, dispatcher.target, "kmlm-test")
    same = all(
        all(np.array_equal(a.numpy(), b.numpy()) for a, b in zip(tf.nest.flatten(one), tf.nest.flatten(two)))
        for one, two in zip(local.take(3), served.take(3))
    )
    code = main(["pretrain", "--corpus", corpus, "--vocab", vocab, "--out", out, "--preset", "tiny", "--seq-len", "32",
                 "--batch-size", "4", "--steps", "2", "--log-points", "1", "--eval-batches", "0", "--no-jit",
                 "--quiet", "--data-service", address])
    print(json.dumps({"same_batches": same, "code": code, "address": address}), flush=True)
    os._exit(0)  # stopping an in-process tf.data service worker can block; the test is done
    """
)


@pytest.mark.slow
def test_data_service_on_a_local_dispatcher_and_worker(corpus_and_vocab, tmp_path):
    corpus, vocab = corpus_and_vocab
    out = tmp_path / "run"
    result = subprocess.run([sys.executable, "-c", DATA_SERVICE_SCRIPT, corpus, vocab, str(out)], capture_output=True,
                            text=True, timeout=400, cwd=ROOT, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["same_batches"]  # the service's worker built exactly the local batches
    assert report["code"] == 0 and (out / "model.keras").exists()
