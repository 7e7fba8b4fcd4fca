"""Cosine-similarity softmax attention, registered with llnbench as ``attention=cosine``."""

from llnbench_cosine.attention import CosineAttention

__all__ = ["CosineAttention"]
