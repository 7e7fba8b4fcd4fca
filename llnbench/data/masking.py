"""Dynamic MLM masking (RoBERTa): a fresh mask for every batch, drawn from the masker's own
seeded ``torch.Generator`` so a resumed run masks exactly as the uninterrupted one (spec §2.3).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

from llnbench.errors import CheckpointError, ConfigError

IGNORE_INDEX = -100  # label of unmasked positions (PyTorch cross-entropy's default ignore_index)


class MaskingIds(Protocol):
    """What the masker needs from a tokenizer (``RobertaTokenizer`` satisfies it)."""

    mask_id: int
    vocab_size: int

    @property
    def special_ids(self) -> Iterable[int]: ...


@dataclass(frozen=True)
class TokenIds:
    """The ids a masker needs, for use without a tokenizer object."""

    mask_id: int
    vocab_size: int
    special_ids: frozenset[int]


class MLMMasker:
    """``masker(input_ids) -> (masked_input_ids, labels)``.

    Selects ``mlm_probability`` of the non-special tokens (at least one per batch); of those 80%
    become ``<mask>``, 10% a random non-special token, 10% stay; labels are −100 elsewhere.
    Random numbers come only from the masker's CPU generator, in a fixed order per batch shape.
    """

    def __init__(
        self,
        ids: MaskingIds,
        mlm_probability: float = 0.15,
        seed: int = 0,
        mask_fraction: float = 0.8,
        random_fraction: float = 0.1,
    ):
        if not 0.0 < mlm_probability < 1.0:
            raise ConfigError(f"mlm_probability must be in (0, 1), got {mlm_probability}")
        if mask_fraction < 0 or random_fraction < 0 or mask_fraction + random_fraction > 1:
            raise ConfigError(
                f"mask_fraction ({mask_fraction}) and random_fraction ({random_fraction}) must be "
                "≥ 0 and sum to at most 1"
            )
        self.mask_id = int(ids.mask_id)
        self.special_ids = torch.tensor(sorted(int(i) for i in ids.special_ids), dtype=torch.long)
        keep = torch.ones(int(ids.vocab_size), dtype=torch.bool)
        keep[self.special_ids] = False
        self.random_ids = keep.nonzero().squeeze(1)  # replacement candidates: real tokens only
        self.mlm_probability = float(mlm_probability)
        self.mask_fraction = float(mask_fraction)
        self.random_fraction = float(random_fraction)
        self.seed = int(seed)
        self.generator = torch.Generator(device="cpu")
        self.generator.manual_seed(self.seed)

    def __call__(
        self, batch: torch.Tensor | Sequence[torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mask a (B, N) batch (or a list of equal-length 1-D tensors, as a DataLoader gives)."""
        input_ids = batch if isinstance(batch, torch.Tensor) else torch.stack(list(batch))
        device = input_ids.device
        ids = input_ids.detach().to("cpu", torch.long)
        g = self.generator
        maskable = ~torch.isin(ids, self.special_ids)
        prob = torch.full(ids.shape, self.mlm_probability).masked_fill_(~maskable, 0.0)
        selected = torch.bernoulli(prob, generator=g).bool()
        # One draw always, so the generator advances the same whether or not it is needed.
        fallback = torch.rand(ids.shape, generator=g).masked_fill_(~maskable, -1.0)
        if not selected.any() and maskable.any():
            selected.view(-1)[fallback.view(-1).argmax()] = True
        labels = torch.where(selected, ids, torch.full_like(ids, IGNORE_INDEX))
        u = torch.rand(ids.shape, generator=g)
        to_mask = selected & (u < self.mask_fraction)
        to_random = (
            selected & (u >= self.mask_fraction) & (u < self.mask_fraction + self.random_fraction)
        )
        pick = torch.randint(len(self.random_ids), ids.shape, generator=g)
        out = ids.clone()
        out[to_random] = self.random_ids[pick[to_random]]
        out[to_mask] = self.mask_id
        return out.to(device), labels.to(device)

    def state_dict(self) -> dict[str, object]:
        """Plain containers and tensors only, so ``torch.load(weights_only=True)`` accepts it."""
        return {"generator": self.generator.get_state(), "seed": self.seed}

    def load_state_dict(self, state: dict[str, object]) -> None:
        generator = state["generator"]
        if not isinstance(generator, torch.Tensor):
            raise CheckpointError("masker state has no generator tensor (not a masker state?)")
        self.generator.set_state(generator)
        self.seed = int(state.get("seed", self.seed))  # type: ignore[arg-type]
