"""Shared checks for layer tests: config round trip, symbolic call, XLA fit step, saving."""

import os

import keras
import numpy as np


def assert_config_round_trip(layer):
    """`from_config(get_config())` rebuilds a layer with the same config."""
    config = layer.get_config()
    rebuilt = type(layer).from_config(config)
    assert rebuilt.get_config() == config
    return rebuilt


def assert_symbolic_shape(layer, input_shapes, expected_shape, dtypes=None):
    """Calls the layer on Keras symbolic inputs and checks the output shape."""
    dtypes = dtypes or ["float32"] * len(input_shapes)
    inputs = [keras.Input(batch_shape=shape, dtype=dtype) for shape, dtype in zip(input_shapes, dtypes)]
    output = layer(*inputs)
    assert tuple(output.shape) == tuple(expected_shape)


def assert_fit_step_under_xla(model, x, y, sample_weight=None):
    """One `fit` step with `jit_compile=True` runs and changes the weights."""
    before = [w.numpy().copy() for w in model.trainable_weights]
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=keras.losses.MeanSquaredError(), jit_compile=True)
    model.fit(x, y, sample_weight=sample_weight, batch_size=len(y), epochs=1, verbose=0)
    changed = [not np.allclose(a, w.numpy()) for a, w in zip(before, model.trainable_weights)]
    assert any(changed)


def assert_save_load_identical(model, x, tmp_path):
    """`.keras` save then safe-mode load gives identical outputs."""
    path = os.path.join(tmp_path, "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_array_equal(np.asarray(model(x)), np.asarray(loaded(x)))
    return loaded


def write_corpus(path, documents):
    """Writes documents as a kmlm text corpus (blank line between documents); returns the path."""
    path.write_text("\n\n".join(documents) + "\n", encoding="utf-8")
    return str(path)


def pretrain_tiny_run(corpus, run, seq_len):
    """Pretrains a tiny encoder for 60 quick steps (no XLA, no evaluation) on `corpus` into
    `run`, the in-domain start of the fine-tuning tests; returns `run`."""
    from kmlm.cli.main import main

    assert main(["pretrain", "--corpus", str(corpus), "--out", str(run), "--preset", "tiny", "--seq-len",
                 str(seq_len), "--batch-size", "16", "--vocab-size", "400", "--steps", "60", "--log-points", "2",
                 "--eval-batches", "0", "--learning-rate", "1e-3", "--no-jit", "--quiet"]) == 0
    return str(run)


def run_cli(argv, capsys):
    """Runs `kmlm` in-process: (exit status, stdout, stderr)."""
    from kmlm.cli.main import main

    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def random_mlm_batch(seed=0, batch=4, seq_len=16, predictions=8, unused_slots=0):
    """A random masked-LM batch (x, y, sample weights) over ids 5..63; the last
    `unused_slots` mask slots of each row get weight 0."""
    rng = np.random.default_rng(seed)
    x = {
        "token_ids": rng.integers(5, 64, (batch, seq_len)).astype("int32"),
        "segment_ids": np.zeros((batch, seq_len), "int32"),
        "document_ids": np.ones((batch, seq_len), "int32"),
        "mask_positions": np.sort(rng.integers(1, seq_len, (batch, predictions)), 1).astype("int32"),
    }
    y = rng.integers(5, 64, (batch, predictions)).astype("int32")
    w = np.ones((batch, predictions), "float32")
    if unused_slots:
        w[:, -unused_slots:] = 0
    return x, y, w


def logged_epochs(run_dir):
    """The epoch numbers of the rows of `run_dir`/metrics.csv, in file order."""
    with open(os.path.join(run_dir, "metrics.csv"), encoding="utf-8") as file:
        return [int(line.split(",")[0]) for line in file.read().splitlines()[1:]]


def kill_during_training(command, run_dir, epochs=3, timeout=300):
    """Starts `command` (a `kmlm pretrain` subprocess that writes `run_dir`) and SIGKILLs its
    whole process group once metrics.csv has `epochs` rows and a backup exists, as a power cut
    would; fails the test if training ends first. Returns `logged_epochs(run_dir)`."""
    import signal

    signal_during_training(command, run_dir, signal.SIGKILL, epochs, timeout=timeout)
    return logged_epochs(run_dir)


def signal_during_training(command, run_dir, signal_number, epochs=1, *, delay=0.0, backup=True, timeout=300):
    """Starts `command` (a `kmlm pretrain` or `finetune` subprocess that writes `run_dir`),
    waits until metrics.csv has `epochs` rows and (with `backup`) a backup exists, then `delay`
    seconds more (into the next epoch), and sends `signal_number` to its whole process group;
    fails the test if training ends first. Returns (exit status, stderr lines) once the
    process has ended."""
    import signal
    import subprocess
    import tempfile
    import time

    import pytest

    errors = tempfile.TemporaryFile(mode="w+", encoding="utf-8")
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=errors, start_new_session=True, text=True)
    metrics = os.path.join(run_dir, "metrics.csv")

    def rows():  # lines are counted, not parsed: the last one may be half written
        if not os.path.exists(metrics):
            return 0
        with open(metrics, encoding="utf-8") as file:
            return len(file.read().splitlines()) - 1

    deadline = time.time() + timeout
    while time.time() < deadline:
        if rows() >= epochs and (not backup or os.path.exists(os.path.join(run_dir, "backup"))):
            break
        if process.poll() is not None:
            pytest.fail("training ended before it could be interrupted")
        time.sleep(0.05)
    time.sleep(delay)
    if process.poll() is not None:
        pytest.fail("training ended before it could be interrupted")
    os.killpg(process.pid, signal_number)
    try:
        status = process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        pytest.fail(f"the process did not end within {timeout}s of signal {signal_number}")
    errors.seek(0)
    return status, errors.read().splitlines()
