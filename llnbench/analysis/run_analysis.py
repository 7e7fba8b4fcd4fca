"""``RunAnalysis``: one analysed checkpoint, shared by the checkpoint mode and its figures.

It sits below both ``checkpoint_mode`` (which fills it) and ``checkpoint_plots`` (which draws it),
so neither of the two imports the other's types.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from llnbench.analysis.capture import flatten_layers
from llnbench.analysis.concentration import LLN_BRANCH, Measurement

if TYPE_CHECKING:
    from torch import Tensor

    from llnbench.model.pretrained import Pretrained


@dataclass
class RunAnalysis:
    """One run's instruments per layer, its example matrices and its training-time probe rows."""

    label: str
    pretrained: Pretrained
    layers: list[Measurement]
    examples: list[dict[str, Tensor]]  # per layer: {"" or "lln_branch_": (H, n, n)} of sequence 0
    history: list[dict[str, Any]]

    @property
    def attention(self) -> str:
        return self.pretrained.attention.name

    @property
    def has_branch(self) -> bool:
        return any(k.startswith(LLN_BRANCH) for k in self.layers[0].per_head)

    def layer_means(self) -> list[dict[str, float]]:
        return [m.means() for m in self.layers]

    def overall(self) -> dict[str, float]:
        flat = flatten_layers(self.layer_means())
        return {k.removeprefix("mean/"): v for k, v in flat.items() if k.startswith("mean/")}
