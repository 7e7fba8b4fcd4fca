"""Sequence-classification examples and their batches, shared by GLUE fine-tuning and LRA."""

from __future__ import annotations

from collections.abc import Sequence

import torch


class EncodedSplit(torch.utils.data.Dataset):
    """A tokenised split: ``input_ids`` (with specials, truncated), ``label`` and ``idx``."""

    def __init__(self, input_ids: list[list[int]], labels: list, indices: list[int]):
        self.input_ids = input_ids
        self.labels = labels
        self.indices = indices

    def __len__(self) -> int:
        return len(self.input_ids)

    def __getitem__(self, i: int) -> dict:
        return {"input_ids": self.input_ids[i], "label": self.labels[i], "idx": self.indices[i]}


def pad_batch(examples: Sequence[dict], pad_id: int) -> dict[str, torch.Tensor]:
    """Dynamic padding to the longest example: ``input_ids``, ``attention_mask`` (1 = real),
    ``labels`` (float for regression) and ``idx``."""
    longest = max(len(e["input_ids"]) for e in examples)
    input_ids = torch.full((len(examples), longest), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), longest), dtype=torch.long)
    for row, e in enumerate(examples):
        n = len(e["input_ids"])
        input_ids[row, :n] = torch.as_tensor(e["input_ids"], dtype=torch.long)
        attention_mask[row, :n] = 1
    labels = [e["label"] for e in examples]
    dtype = torch.float32 if any(isinstance(v, float) for v in labels) else torch.long
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "labels": torch.tensor(labels, dtype=dtype),
        "idx": torch.tensor([int(e["idx"]) for e in examples], dtype=torch.long),
    }
