"""llnbench.testing: each check passes on a correct mechanism and fails on one broken its way."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from llnbench.attention import ATTENTIONS
from llnbench.attention.reference import softmax_matrix
from llnbench.attention.softmax import SoftmaxAttention
from llnbench.testing import (
    check_attention,
    check_backward,
    check_batch_independence,
    check_causal_prefix,
    check_forward,
    check_gradcheck,
    check_interface,
    check_matrix,
    check_padding,
)


def softmax_reference(attn, q, k, v, mask):
    return softmax_matrix(q, k, mask, attn.causal) @ v


class IgnoresMask(SoftmaxAttention):
    """Padded keys take part: junk reaches real outputs."""

    def forward(self, q, k, v, attention_mask=None):
        return super().forward(q, k, v, None)


class NaNThroughZeroWeights(SoftmaxAttention):
    """Masks keys, but lets padded NaN values through a zero weight (0 * NaN = NaN)."""

    def forward(self, q, k, v, attention_mask=None):
        if attention_mask is None:
            return super().forward(q, k, v)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attention_mask[:, None, None])


class PeeksAhead(SoftmaxAttention):
    """'Causal' with one token of look-ahead."""

    def forward(self, q, k, v, attention_mask=None):
        n = q.shape[2]
        allowed = torch.ones(n, n, dtype=torch.bool).tril(diagonal=1)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)


class PoolsOverBatch(SoftmaxAttention):
    """Scales queries by a statistic of the whole batch."""

    def forward(self, q, k, v, attention_mask=None):
        return super().forward(q / q.std(), k, v, attention_mask)


class HalfGradient(SoftmaxAttention):
    """Right values, gradients halved (a wrong hand-written backward)."""

    def forward(self, q, k, v, attention_mask=None):
        out = super().forward(q, k, v, attention_mask)
        return out.detach() + 0.5 * (out - out.detach())


class GradientIntoPadding(SoftmaxAttention):
    """Right values, but padded values receive gradient."""

    def forward(self, q, k, v, attention_mask=None):
        out = super().forward(q, k, v, attention_mask)
        total = v.sum(dim=2, keepdim=True)
        return out + (total - total.detach())


class TransposedMatrix(SoftmaxAttention):
    def attention_matrix(self, q, k, attention_mask=None):
        return super().attention_matrix(q, k, attention_mask).transpose(-1, -2)


class ReturnsFloat64(SoftmaxAttention):
    def forward(self, q, k, v, attention_mask=None):
        return super().forward(q, k, v, attention_mask).double()


def build(cls, causal: bool = False, d: int = 8):
    return cls(num_heads=2, head_dim=d, causal=causal).double().eval()


BROKEN = [
    (IgnoresMask, False, lambda a: check_forward(a, softmax_reference), "forward vs reference"),
    (IgnoresMask, False, lambda a: check_padding(a), "junk padding"),
    (NaNThroughZeroWeights, False, lambda a: check_padding(a, junk=float("nan")), "non-finite"),
    (PeeksAhead, True, lambda a: check_causal_prefix(a), "causal prefix"),
    (PoolsOverBatch, False, lambda a: check_batch_independence(a), "batch independence"),
    (HalfGradient, False, lambda a: check_backward(a, softmax_reference), "backward: gradient"),
    (HalfGradient, False, lambda a: check_gradcheck(build(HalfGradient, d=4)), "gradcheck"),
    (GradientIntoPadding, False, lambda a: check_padding(a), "padded v receives gradient"),
    (TransposedMatrix, False, lambda a: check_matrix(a), "attention_matrix @ v vs forward"),
    (ReturnsFloat64, False, lambda a: check_interface(a.float()), "float64 for float32 inputs"),
]


@pytest.mark.parametrize(
    ("cls", "causal", "check", "message"),
    BROKEN,
    ids=[
        "ignores-mask-forward", "ignores-mask-padding", "nan-padding", "peeks-ahead",
        "pools-batch", "half-gradient-backward", "half-gradient-gradcheck",
        "gradient-into-padding", "transposed-matrix", "float64-output",
    ],
)  # fmt: skip
def test_each_check_catches_its_broken_variant(cls, causal: bool, check, message: str) -> None:
    with pytest.raises(AssertionError, match=message):
        check(build(cls, causal))


@pytest.mark.parametrize("cls", [IgnoresMask, PeeksAhead, PoolsOverBatch, HalfGradient])
def test_check_attention_fails_on_broken_variants(cls) -> None:
    with pytest.raises(AssertionError):
        check_attention(cls, softmax_reference, lengths=(5,), junk=(1e4,))


def test_each_check_passes_on_the_correct_mechanism() -> None:
    for causal in (False, True):
        attn = build(SoftmaxAttention, causal)
        check_forward(attn, softmax_reference)
        check_backward(attn, softmax_reference)
        check_matrix(attn, row_sums=1e-12, nonnegative=True, zero_padded_columns=True)
        check_padding(attn, junk=float("nan"))
        check_batch_independence(attn)
        check_gradcheck(build(SoftmaxAttention, causal, d=4))
        check_interface(SoftmaxAttention(num_heads=2, head_dim=8, causal=causal))
    check_causal_prefix(build(SoftmaxAttention, True))


def test_check_attention_runs_every_check_on_a_builtin() -> None:
    done = check_attention(ATTENTIONS["linear_elu"], lengths=(1, 17), options={"chunk": 4})
    assert done == [
        "interface", "bidirectional forward", "bidirectional backward", "bidirectional matrix",
        "bidirectional padding", "bidirectional batch independence", "bidirectional gradcheck",
        "causal forward", "causal backward", "causal matrix", "causal padding", "causal prefixes",
        "causal batch independence", "causal gradcheck",
    ]  # fmt: skip


def test_check_attention_refuses_ill_typed_options() -> None:
    with pytest.raises(AssertionError, match=r"bad value 'x' for option 'chunk'"):
        check_attention(ATTENTIONS["linear_elu"], options={"chunk": "x"})


def test_the_readme_example_meets_the_contract(tmp_path) -> None:
    """README's "Add your own attention" class, run as written."""
    import importlib.util
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    code = re.search(r"```python\n(# my_pkg/attention.py\n.*?)```", readme, re.S).group(1)
    (tmp_path / "readme_attention.py").write_text(code)
    spec = importlib.util.spec_from_file_location(
        "readme_attention", tmp_path / "readme_attention.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    def scaled_reference(attn, q, k, v, mask):
        return softmax_matrix(attn.scale * q, k, mask, attn.causal) @ v

    check_attention(module.ScaledSoftmax, scaled_reference, options={"scale": 2.0}, lengths=(5, 17))
