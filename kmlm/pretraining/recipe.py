"""The default pretraining recipe of `kmlm pretrain`, per preset (constants only: the command
line reads them for its --help without loading TensorFlow).

Chosen by held-out masked accuracy on 2 CPU cores (benchmarks/pretrain_recipes.py; the
table is in the README): pre-LN blocks without dropout, which take a high peak learning
rate; rows of 64 tokens, which train on as many tokens in half the time per step and learn
more from them than rows of 128 early on; 30% of the tokens masked (evaluation always masks
15%, so the numbers compare); for tiny and mini no warmup, and the rate held at its peak
until the last fifth of the run, then a linear fall to 0 (benchmarks/README.md: "Warmup,
stable, decay").
"""

PRETRAINING_MODEL = {"dropout": 0.0, "attention_dropout": 0.0, "norm_first": True, "document_positions": True}
# Rows, batch and masking of a run unless --seq-len, --batch-size, --mask-rate say otherwise.
SEQ_LEN = 64
BATCH_SIZE = 32
MASK_RATE = 0.3
LEARNING_RATES = {"tiny": 2e-3, "mini": 1e-3}
# The optimizer: AdamW (weight decay 0.01 off LayerNorm and biases) with global-norm clipping.
CLIP_NORM = 1.0
ADAM_BETA2 = 0.98
ADAM_EPSILON = 1e-6
LARGER_PRESET_LEARNING_RATE = 5e-4
# The schedule: a linear warmup over this share of the run (per preset), the peak held,
# then the fall (linear unless --schedule says otherwise) over the last DECAY of the run.
WARMUPS = {"tiny": 0.0, "mini": 0.0}
LARGER_PRESET_WARMUP = 0.1
DECAY = 0.2


def default_learning_rate(preset):
    """The peak learning rate `kmlm pretrain` uses for `preset` unless --learning-rate is given.

    Example:
    >>> default_learning_rate("tiny"), default_learning_rate("base")
    (0.002, 0.0005)
    """
    return LEARNING_RATES.get(preset, LARGER_PRESET_LEARNING_RATE)


def default_warmup(preset):
    """The share of the run `kmlm pretrain` warms up over for `preset` unless --warmup is given.

    Example:
    >>> default_warmup("tiny"), default_warmup("base")
    (0.0, 0.1)
    """
    return WARMUPS.get(preset, LARGER_PRESET_WARMUP)
