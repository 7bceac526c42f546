"""Downstream tasks on a pretrained kmlm encoder: classification, sentence pairs, token
tagging and sentence similarity."""
