"""Draws the README's "Looking inside" pictures: the attention maps and the integrated-gradients
attributions of a small bilingual topic classifier, on one English and one Chinese text.

Offline and CPU-only (a few minutes): it writes an English/Chinese corpus of sentences about
files or numbers, pretrains a tiny encoder on it, fine-tunes a classifier to tell the two
topics apart, then runs the commands a user would:

    kmlm attention CLASSIFIER TEXT --layer 1 --out docs/attention_en.png
    kmlm predict CLASSIFIER TEXT_EN TEXT_ZH --explain --explain-out docs/attributions.png

Usage: python docs/looking_inside.py [--work DIR] [--steps N]
Chinese glyphs need a CJK font (e.g. apt-get install fonts-wqy-microhei); without one they
are drawn as boxes.
"""

import argparse
import json
import os
import random
import sys

from kmlm.cli.main import main

DOCS = os.path.dirname(os.path.abspath(__file__))
TOPICS = {
    "files": {"en": ("file", "directory", "path", "read", "write", "open"),
              "zh": ("文件", "目录", "路径", "读取", "写入", "打开")},
    "numbers": {"en": ("integer", "float", "number", "decimal", "sum", "divide"),
                "zh": ("整数", "浮点数", "数字", "小数", "求和", "除法")},
}
FILLER = {"en": ("the", "a", "of", "to", "is", "in", "and", "for", "this", "that", "with", "value", "object",
                 "function", "method", "name", "default", "return"),
          "zh": ("这个", "函数", "返回", "一个", "的", "值", "对象", "方法", "名称", "默认", "可以", "使用", "在", "中", "和")}
TEXTS = {"en": "open the file in this directory and return its path",
         "zh": "打开这个目录中的文件"}


def sentence(rng, topic, language):
    words = [rng.choice(FILLER[language]) for _ in range(rng.randint(4, 9))]
    for _ in range(2):
        words.insert(rng.randrange(len(words) + 1), rng.choice(TOPICS[topic][language]))
    return ("" if language == "zh" else " ").join(words)


def examples(count, seed):
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        topic, language = rng.choice(sorted(TOPICS)), rng.choice(("en", "zh"))
        rows.append({"text": sentence(rng, topic, language), "label": topic})
    return rows


def write_lines(path, lines):
    with open(path, "w", encoding="utf-8") as file:
        file.write("\n".join(lines) + "\n")
    return path


def run(argv):
    if main(argv) != 0:
        sys.exit(f"failed: kmlm {' '.join(argv)}")


def build_classifier(work, steps):
    """Pretrains on the topic text, fine-tunes on labelled examples; returns the classifier's directory."""
    os.makedirs(work, exist_ok=True)
    corpus = write_lines(os.path.join(work, "corpus.txt"), [row["text"] for row in examples(4000, 1)])
    train = write_lines(os.path.join(work, "train.jsonl"),
                        [json.dumps(row, ensure_ascii=False) for row in examples(600, 2)])
    dev = write_lines(os.path.join(work, "dev.jsonl"), [json.dumps(row, ensure_ascii=False) for row in examples(200, 3)])
    pretrained, classifier = os.path.join(work, "run"), os.path.join(work, "classifier")
    if not os.path.isfile(os.path.join(pretrained, "model.keras")):
        run(["pretrain", "--corpus", corpus, "--one-per-line", "--out", pretrained, "--preset", "tiny", "--seq-len",
             "32", "--batch-size", "32", "--vocab-size", "600", "--steps", str(steps), "--quiet"])
    if not os.path.isfile(os.path.join(classifier, "task.json")):
        run(["finetune", pretrained, "--task", "classify", "--train", train, "--eval", dev, "--out", classifier,
             "--seq-len", "32", "--quiet"])
    return classifier


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default="/tmp/kmlm-looking-inside", help="where the corpus and models go")
    parser.add_argument("--steps", type=int, default=600, help="pretraining steps")
    return parser.parse_args()


if __name__ == "__main__":
    args = parse_args()
    classifier = build_classifier(args.work, args.steps)
    for language, text in TEXTS.items():
        run(["attention", classifier, text, "--layer", "1", "--out", os.path.join(DOCS, f"attention_{language}.png")])
    run(["predict", classifier, TEXTS["en"], TEXTS["zh"], "--explain", "--explain-out",
         os.path.join(DOCS, "attributions.png")])
