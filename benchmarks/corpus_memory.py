"""Peak memory of `kmlm pretrain` against corpus size: the corpus is streamed, never loaded.

Generates text corpora of the given sizes (blank-line separated paragraphs of varied
sentences; optionally one file that is a single enormous line), then runs the same
fixed-step `kmlm pretrain` on each in a child process and reports the child's peak resident
set size (`ru_maxrss` from `os.wait4`). Flat memory means the figures stay within run-to-run
noise however large the corpus.

    python benchmarks/corpus_memory.py --sizes 10MB 1GB --dir /tmp/kmlm-corpora
    python benchmarks/corpus_memory.py --sizes 2MB 40MB --steps 4 --json out.json
"""

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time

WORDS = (
    "the a of to and in is it that for on with as was by at from this be are or an which one all were "
    "data model token layer vector train corpus word text value file list return error method class "
    "river mountain city garden window market letter silver forest winter morning engine history"
).split()


def parse_size(text):
    units = {"KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30}
    for unit, factor in units.items():
        if text.upper().endswith(unit):
            return int(float(text[: -len(unit)]) * factor)
    return int(text)


def write_corpus(path, size, seed=0, single_line=False):
    """Writes about `size` bytes of text: paragraphs (or one line) of random sentences."""
    rng = random.Random(seed)

    def paragraph(number):
        sentences = []
        for _ in range(rng.randint(2, 6)):
            words = [rng.choice(WORDS) for _ in range(rng.randint(6, 18))]
            sentences.append(" ".join(words).capitalize() + ".")
        return f"Paragraph {number}. " + " ".join(sentences)

    # A pool of distinct paragraphs, repeated with fresh numbers: fast to write at 1 GB.
    pool = [paragraph(i) for i in range(2000)]
    separator = " " if single_line else "\n\n"
    written, number = 0, 0
    with open(path, "w", encoding="utf-8") as file:
        while written < size:
            block = separator.join(f"{number + i} {text}" for i, text in enumerate(pool))
            block = block[: size - written] + separator
            file.write(block)
            written += len(block)
            number += len(pool)
        file.write("\n")
    return path


def measure(corpus, vocab, steps, workdir):
    """Runs `kmlm pretrain` on `corpus` in a child process; returns its peak RSS in MiB."""
    out = tempfile.mkdtemp(prefix="run-", dir=workdir)
    command = [sys.executable, "-m", "kmlm", "pretrain", "--corpus", corpus, "--vocab", vocab, "--out", out,
               "--overwrite", "--preset", "tiny", "--seq-len", "64", "--batch-size", "16", "--steps", str(steps),
               "--log-points", "1", "--eval-batches", "1", "--no-jit", "--quiet"]
    start = time.time()
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    output = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode:
        raise RuntimeError(f"kmlm pretrain failed on {corpus}:\n{output.decode(errors='replace')[-3000:]}")
    return usage.ru_maxrss / 1024, time.time() - start


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["10MB", "1GB"], help="corpus sizes (KB, MB, GB)")
    parser.add_argument("--single-line", action="store_true", help="also measure a corpus that is one enormous line")
    parser.add_argument("--steps", type=int, default=20, help="training steps of every run")
    parser.add_argument("--dir", default=None, help="where to write the corpora (default: a temporary directory)")
    parser.add_argument("--keep", action="store_true", help="keep the generated corpora")
    parser.add_argument("--json", default=None, help="also write the results to this file")
    args = parser.parse_args(argv)

    workdir = args.dir or tempfile.mkdtemp(prefix="kmlm-corpus-memory-")
    os.makedirs(workdir, exist_ok=True)
    vocab = os.path.join(workdir, "vocab.txt")
    with open(vocab, "w", encoding="utf-8") as file:
        # A fixed vocabulary: every run does the same work whatever the corpus size.
        tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", "paragraph"] + sorted(set(WORDS))
        tokens += [str(d) for d in range(10)] + [f"##{d}" for d in range(10)]
        file.write("\n".join(tokens) + "\n")
    cases = [(size, False) for size in args.sizes]
    if args.single_line:
        cases.append((args.sizes[-1], True))
    results = []
    for size, single_line in cases:
        name = f"corpus-{size}{'-one-line' if single_line else ''}.txt"
        path = os.path.join(workdir, name)
        if not os.path.isfile(path) or os.path.getsize(path) < parse_size(size):
            write_corpus(path, parse_size(size), single_line=single_line)
        rss, seconds = measure(path, vocab, args.steps, workdir)
        results.append({"corpus": size, "one_line": single_line, "bytes": os.path.getsize(path),
                        "peak_rss_mib": round(rss, 1), "seconds": round(seconds, 1)})
        print(f"{name:28s} {os.path.getsize(path) / 2**20:9.1f} MiB corpus  peak RSS {rss:7.1f} MiB  "
              f"({seconds:.0f}s, {args.steps} steps)", flush=True)
        if not args.keep:
            os.remove(path)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as file:
            json.dump(results, file, indent=2)
    return results


if __name__ == "__main__":
    main()
