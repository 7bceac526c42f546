"""One writer per output directory: real concurrent processes on one --out."""

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from kmlm.output_lock import hold_output_directory, lock_path
from tests.cli.test_main import ENGLISH
from tests.helpers import run_cli, write_corpus

HOST = socket.gethostname()


def _wait_for_holder(out, pid, process, timeout=120):
    """Waits until the lock of `out` names `pid`; fails if `process` ends first."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with open(lock_path(out), encoding="utf-8") as file:
                if json.loads(file.read() or "{}").get("pid") == pid:
                    return
        except (FileNotFoundError, ValueError):
            pass
        if process.poll() is not None:
            pytest.fail(f"the first writer ended early: {process.communicate()[1][-2000:]}")
        time.sleep(0.1)
    pytest.fail("the first writer never took the lock")


def _holder_process(out, command="pretrain"):
    """A separate process that holds the lock of `out` until killed."""
    code = textwrap.dedent(f"""
        import time
        from kmlm.output_lock import hold_output_directory
        with hold_output_directory({str(out)!r}, {command!r}):
            time.sleep(600)
    """)
    process = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True)
    _wait_for_holder(out, process.pid, process)
    return process


def _refusal_prefix(out, command, pid):
    return f"--out {str(out)!r} is in use by kmlm {command} (pid {pid} on {HOST}, since "


REFUSAL_END = "); two writers would mix their files: wait for it to finish or choose another --out"


@pytest.mark.slow
def test_a_second_pretrain_on_the_same_out_refuses_and_a_dead_ones_lock_is_taken_over(tmp_path):
    corpus = write_corpus(tmp_path / "corpus.txt", ENGLISH * 4)
    out = tmp_path / "run"
    command = [sys.executable, "-m", "kmlm", "pretrain", "--corpus", corpus, "--out", str(out), "--steps", "2000",
               "--preset", "tiny", "--seq-len", "32", "--batch-size", "8", "--vocab-size", "300",
               "--eval-batches", "0", "--no-jit", "--quiet"]
    first = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_holder(out, first.pid, first)
        second = subprocess.run(command, capture_output=True, text=True, timeout=300)
        assert first.poll() is None  # still training: the refusal did not wait for it
        assert second.returncode == 2
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1, second.stderr
        message = lines[0].removeprefix("kmlm pretrain: error: ")
        assert message.startswith(_refusal_prefix(out, "pretrain", first.pid)) and message.endswith(REFUSAL_END)
    finally:
        first.kill()  # SIGKILL: no clean-up runs, the lock file stays behind
        first.wait()
    assert os.path.exists(lock_path(out))
    third = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_holder(out, third.pid, third)  # the dead run's lock did not block it
    finally:
        third.kill()
        third.wait()


@pytest.mark.parametrize("argv", [
    ["finetune", "RUN", "--task", "classify", "--train", "train.jsonl"],
    ["word2vec", "--corpus", "CORPUS"],
    ["glove", "--corpus", "CORPUS"],
])
def test_every_writing_command_refuses_an_out_held_by_another_process(argv, tmp_path, capsys):
    out = tmp_path / "out"
    corpus = write_corpus(tmp_path / "corpus.txt", ENGLISH)
    argv = [corpus if arg == "CORPUS" else str(tmp_path / arg) if arg in ("RUN", "train.jsonl") else arg
            for arg in argv]
    holder = _holder_process(out)
    try:
        code, _, err = run_cli([*argv, "--out", str(out)], capsys)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert code == 2
    message = err.strip().removeprefix(f"kmlm {argv[0]}: error: ")
    assert message.startswith(_refusal_prefix(out, "pretrain", holder.pid)) and message.endswith(REFUSAL_END)
    assert not out.exists()


def test_a_lock_left_by_a_killed_process_is_taken_over(tmp_path):
    out = tmp_path / "run"
    holder = _holder_process(out, "glove")
    holder.kill()
    holder.wait()
    with open(lock_path(out), encoding="utf-8") as file:
        assert json.load(file)["pid"] == holder.pid  # the dead process's record is still there
    with hold_output_directory(str(out), "word2vec"):
        with open(lock_path(out), encoding="utf-8") as file:
            record = json.load(file)
        assert (record["pid"], record["host"], record["command"]) == (os.getpid(), HOST, "word2vec")
    assert not os.path.exists(lock_path(out))  # released, and no file left beside --out


def test_the_lock_is_released_after_a_failed_command(tmp_path, capsys):
    out = tmp_path / "run"
    code, _, err = run_cli(["pretrain", "--corpus", str(tmp_path / "missing.txt"), "--out", str(out)], capsys)
    assert code == 2 and "does not exist" in err
    assert not out.exists() and not os.path.exists(lock_path(out))
