"""Small labelled datasets with a learnable signal, written inside the tests."""

import json
import random

FILLER = ("the", "a", "of", "to", "is", "in", "and", "for", "this", "that", "with", "be", "by", "on", "as",
          "it", "an", "or", "are", "value", "object", "function", "method", "name", "default", "return")
TOPICS = {
    "files": ("file", "directory", "path", "read", "write", "open"),
    "numbers": ("integer", "float", "number", "decimal", "sum", "divide"),
}
ENTITY_WORDS = {"PER": (("alice", "smith"), ("bob",), ("carol", "jones", "lee")),
                "LOC": (("paris",), ("new", "york"), ("berlin",))}


def topic_examples(count, seed, pair=False, keywords="all"):
    """classify: the label is the topic whose keywords the text contains; pair: the label says
    whether both texts share a topic. `keywords` "first" or "last" uses only that half of each
    topic's keywords (fine-tune on one half, test on the other: only an encoder pretrained on
    text where the halves co-occur can transfer)."""
    rng = random.Random(seed)
    names = sorted(TOPICS)
    half = {"all": slice(None), "first": slice(None, 3), "last": slice(3, None)}[keywords]

    def sentence(topic):
        words = [rng.choice(FILLER) for _ in range(rng.randint(5, 12))]
        for _ in range(2):
            words.insert(rng.randrange(len(words) + 1), rng.choice(TOPICS[topic][half]))
        return " ".join(words)

    rows = []
    for _ in range(count):
        topic = rng.choice(names)
        if pair:
            other = rng.choice(names)
            rows.append({"text": sentence(topic), "text_pair": sentence(other),
                         "label": "same" if other == topic else "different"})
        else:
            rows.append({"text": sentence(topic), "label": topic})
    return rows


def tag_examples(count, seed):
    """tag: person and place names (one to three words) among filler words, BIO-tagged."""
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        tokens, tags = [], []
        for _ in range(rng.randint(2, 4)):
            tokens += [rng.choice(FILLER) for _ in range(rng.randint(1, 3))]
            tags += ["O"] * (len(tokens) - len(tags))
            kind = rng.choice(sorted(ENTITY_WORDS))
            name = rng.choice(ENTITY_WORDS[kind])
            tokens += list(name)
            tags += [f"B-{kind}"] + [f"I-{kind}"] * (len(name) - 1)
        rows.append({"tokens": tokens, "tags": tags})
    return rows


def similarity_examples(count, seed):
    """similarity: each text mentions three topics; the score is how many topic mentions the
    two texts share (0 to 3, counted as a multiset)."""
    rng = random.Random(seed)
    names = sorted(TOPICS)
    rows = []
    for _ in range(count):
        first = [rng.choice(names) for _ in range(3)]
        second = [rng.choice(names) for _ in range(3)]
        score = sum(min(first.count(t), second.count(t)) for t in names)

        def text(topics):
            return " ".join(rng.choice(FILLER) + " " + rng.choice(TOPICS[t]) for t in topics)

        rows.append({"text": text(first), "text_pair": text(second), "label": float(score)})
    return rows


def write_jsonl(path, rows):
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    return str(path)
