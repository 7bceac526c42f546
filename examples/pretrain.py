"""Pretrain a masked language model with kmlm's pipeline and plain `model.fit`.

    python examples/pretrain.py --steps 300            # mini model on builtin:python-docs
    python examples/pretrain.py --corpus my_texts/ --masking whole_word
"""

import argparse

import kmlm
from kmlm import pipelines

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--corpus", default="builtin:python-docs")
parser.add_argument("--preset", default="mini")
parser.add_argument("--steps", type=int, default=300)
parser.add_argument("--seq-len", type=int, default=128)
parser.add_argument("--batch-size", type=int, default=32)
parser.add_argument("--vocab-size", type=int, default=8192)
parser.add_argument("--masking", default="whole_word", choices=pipelines.STRATEGIES)
args = parser.parse_args()

documents = pipelines.split_documents(pipelines.load_documents(args.corpus), "train")
vocabulary = pipelines.learn_vocabulary(documents, args.vocab_size)
masking = pipelines.MaskingConfig(strategy=args.masking, rate=0.15)
dataset = pipelines.mlm_dataset(
    documents, vocabulary, seq_len=args.seq_len, batch_size=args.batch_size, masking=masking
)

config = kmlm.ModelConfig.from_preset(args.preset, vocabulary_size=len(vocabulary))
model = kmlm.build_mlm_model(config, pipelines.max_predictions_for(args.seq_len, masking.rate))
kmlm.compile_for_pretraining(model, total_steps=args.steps)
history = model.fit(dataset, steps_per_epoch=args.steps, epochs=1)
print(f"final loss {history.history['loss'][-1]:.4f}, masked accuracy {history.history['masked_accuracy'][-1]:.4f}")
