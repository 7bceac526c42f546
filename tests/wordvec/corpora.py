"""Synthetic corpora with planted structure for the word-vector tests."""

import random

GROUPS = {
    "animal": ["cat", "dog", "horse", "cow", "sheep"],
    "fruit": ["apple", "banana", "cherry", "grape", "melon"],
    "tool": ["hammer", "saw", "drill", "wrench", "chisel"],
    "color": ["red", "blue", "green", "yellow", "purple"],
}
_TEMPLATES = {
    "animal": ["the {} eats grass in the field", "a {} sleeps in the barn", "the farmer feeds the {}"],
    "fruit": ["she peels a ripe {} for lunch", "the {} tastes sweet and juicy", "we bought a {} at the market"],
    "tool": ["he fixes the shelf with a {}", "the carpenter sharpens the {}", "a {} hangs in the workshop"],
    "color": ["the wall is painted {}", "her dress is bright {}", "the sky turned {} at dusk"],
}

# Each person word has a gender and a rank; its sentences mix one context word of each, so
# king - man + woman lands on queen.
_PEOPLE = {
    ("male", "royal"): "king", ("female", "royal"): "queen",
    ("male", "common"): "man", ("female", "common"): "woman",
    ("male", "young"): "boy", ("female", "young"): "girl",
}
_FEATURE_WORDS = {
    "male": ["he", "his", "beard", "himself"],
    "female": ["she", "her", "dress", "herself"],
    "royal": ["crown", "throne", "palace", "kingdom"],
    "common": ["street", "job", "town", "market"],
    "young": ["school", "toy", "play", "lesson"],
}


def planted_groups(sentences=3000, seed=0):
    """Sentences in which the words of a group share their contexts."""
    rng = random.Random(seed)
    names = sorted(GROUPS)
    documents = []
    for _ in range(sentences):
        group = rng.choice(names)
        documents.append(rng.choice(_TEMPLATES[group]).format(rng.choice(GROUPS[group])))
    return documents


def planted_analogy(sentences=4000, seed=0):
    """Sentences about six people words built from gender x rank contexts."""
    rng = random.Random(seed)
    people = sorted(_PEOPLE.items())
    documents = []
    for _ in range(sentences):
        (gender, rank), word = rng.choice(people)
        context = [rng.choice(_FEATURE_WORDS[gender]), rng.choice(_FEATURE_WORDS[rank]),
                   rng.choice(_FEATURE_WORDS[rank]), rng.choice(_FEATURE_WORDS[gender])]
        context.insert(rng.randrange(len(context) + 1), word)
        documents.append(" ".join(context))
    return documents


def neighbour_purity(vectors, groups=GROUPS, top_n=4):
    """Mean fraction of a group word's top_n nearest neighbours in its own group."""
    scores = []
    for words in groups.values():
        for word in words:
            neighbours = [w for w, _ in vectors.most_similar(word, top_n=top_n)]
            scores.append(sum(w in words for w in neighbours) / top_n)
    return sum(scores) / len(scores)
