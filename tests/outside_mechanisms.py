"""Broken mechanisms from outside llnbench, as a user might write them: one module of classes
(``broken_attn:<Class>``), modules that fail to import, and a fake installed distribution that
registers some of them as ``llnbench.attentions`` entry points. Used by the fast tests and by
tests/stress/bad_inputs.py."""

from __future__ import annotations

from pathlib import Path

MODULE = "broken_attn"

CLASSES = '''
import torch
from llnbench.attention.softmax import SoftmaxAttention


class Good(SoftmaxAttention):
    """Correct (softmax under another name): the control."""


class InitRaises(SoftmaxAttention):
    def __init__(self, **kwargs):
        raise RuntimeError("cannot allocate my lookup table")


class WrongShape(SoftmaxAttention):
    def forward(self, q, k, v, attention_mask=None):
        return super().forward(q, k, v, attention_mask)[..., :-1]


class Float64(SoftmaxAttention):
    def forward(self, q, k, v, attention_mask=None):
        return super().forward(q, k, v, attention_mask).double()


class IntOut(SoftmaxAttention):
    def forward(self, q, k, v, attention_mask=None):
        return super().forward(q, k, v, attention_mask).long()


class TupleOut(SoftmaxAttention):
    def forward(self, q, k, v, attention_mask=None):
        return super().forward(q, k, v, attention_mask), None


class NoneOut(SoftmaxAttention):
    def forward(self, q, k, v, attention_mask=None):
        return None


class ForwardRaises(SoftmaxAttention):
    def forward(self, q, k, v, attention_mask=None):
        raise ValueError("my kernel needs N divisible by 64")


class NaNOut(SoftmaxAttention):
    def forward(self, q, k, v, attention_mask=None):
        return super().forward(q, k, v, attention_mask) * float("nan")


class IgnoresCausal(SoftmaxAttention):
    def __init__(self, *, num_heads, head_dim, causal=False, dropout=0.0):
        super().__init__(num_heads=num_heads, head_dim=head_dim, causal=False, dropout=dropout)


class Transposed(SoftmaxAttention):
    def forward(self, q, k, v, attention_mask=None):
        return super().forward(q, k, v, attention_mask).transpose(1, 2)
'''

BROKEN = [
    "InitRaises", "WrongShape", "Float64", "IntOut", "TupleOut", "NoneOut", "ForwardRaises",
    "NaNOut", "Transposed",
]  # fmt: skip

ENTRY_POINTS = {
    "ep_good": f"{MODULE}:Good",
    "ep_shape": f"{MODULE}:WrongShape",
    "ep_syntax": "broken_syntax_attn:Anything",
    "ep_raises_on_import": "broken_import_attn:Anything",
    "ep_missing": "no_such_attention_pkg:Cls",
}


def write_outside_mechanisms(folder: Path) -> Path:
    """The modules and a dist-info under ``folder``; put ``folder`` on sys.path to use them."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{MODULE}.py").write_text(CLASSES)
    (folder / "broken_syntax_attn.py").write_text("class Anything(:\n    pass\n")
    (folder / "broken_import_attn.py").write_text("raise RuntimeError('no GPU driver found')\n")
    return fake_distribution(folder, ENTRY_POINTS, "broken_attention")


def fake_distribution(folder: Path, entry_points: dict[str, str], name: str = "fake_attention"):
    """A minimal installed distribution (dist-info with entry points), as pip would leave it."""
    info = folder / f"{name}-1.0.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    lines = "".join(f"{ep} = {target}\n" for ep, target in entry_points.items())
    (info / "entry_points.txt").write_text(f"[llnbench.attentions]\n{lines}")
    return folder
