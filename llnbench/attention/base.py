"""The public interface every attention mechanism implements, and the helpers they share.

This is the stable API for mechanisms inside and outside llnbench (``attention=my_pkg.mod:Cls`` or
the ``llnbench.attentions`` entry-point group). A mechanism is a subclass of :class:`Attention`:

**Construction.** ``Cls(*, num_heads, head_dim, causal=False, dropout=0.0, **options)``; pass the
four common arguments on to ``super().__init__``. Every other keyword argument (with a default) is
an *option*: settable as ``attention.<option>=...`` in every job, listed by
``llnbench.attention.attention_options``, and checked against its annotation (int, float, bool,
str, Literal, Optional, tuple/list, ...) before ``__init__`` runs; an unknown option or a value of
the wrong type (or a non-finite float) is refused with one line. Validate the *values* (ranges,
combinations) in ``__init__`` by raising ``llnbench.errors.ConfigError``. Causality is fixed at
build time; ``causal=True`` on a class with ``supports_causal = False`` is refused here.

**forward(q, k, v, attention_mask=None) -> out.** q, k, v: (B, H, N, d) on one device and of one
dtype, already projected and split into heads (the model owns Q/K/V/O); self-attention, so one N.
``attention_mask``: None (every token real) or (B, N), bool or 0/1, True = real token (the HF
convention). Padded keys must have no influence on any real query's output, whatever their
content (junk, inf, NaN); padded queries' outputs must be finite, otherwise unspecified. Under
``causal=True`` output i may depend on keys j <= i only, by every path (statistics, maxima,
normalisers), in eval mode at least. ``out`` has q's shape and v's dtype.

**Dtype policy.** float64 inputs compute in float64 (the tests' exactness checks); every other
dtype (fp32, bf16, fp16, under autocast or not) computes its statistics, exponentials and sums in
float32 (``core_dtype``, ``upcast``, ``full_precision``) and casts the output back to v's dtype.

**attention_matrix(q, k, attention_mask=None) -> P.** The dense (B, H, N, N) matrix with
``P @ v`` equal to the eval-mode forward (small N: analysis and tests). Rows of real queries
usually sum to 1; padded key columns are 0.

**Class attributes.** ``name`` (defaults to the class name), ``supports_causal``, ``linear_in_n``,
``stochastic`` (training draws random numbers, from torch's default generator),
``uses_attn_dropout`` (applies ``self.dropout`` to probabilities in training), ``complexity`` (a
report string). ``last_stats`` holds detached scalars for logging; ``options()`` returns the
settings recorded beside benchmark rows.

``llnbench.testing`` checks a mechanism against this contract (forward/backward against a
reference, junk padding, causal prefixes, batch independence, gradcheck).
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Iterator
from typing import ClassVar

import torch
from torch import Tensor, nn

from llnbench.errors import ConfigError


class Attention(nn.Module, abc.ABC):
    """Base class: subclasses set the class attributes and implement ``forward``/``attention_matrix``."""

    name: ClassVar[str]
    supports_causal: ClassVar[bool] = True
    linear_in_n: ClassVar[bool] = False
    stochastic: ClassVar[bool] = False
    uses_attn_dropout: ClassVar[bool] = False
    complexity: ClassVar[str] = "O(N^2 d)"

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if "name" not in vars(cls):  # an external mechanism need not name itself
            cls.name = cls.__name__

    def __init__(
        self, *, num_heads: int, head_dim: int, causal: bool = False, dropout: float = 0.0
    ):
        super().__init__()
        if causal and not self.supports_causal:
            # build_attention names the causal mechanisms; the base class cannot reach the registry
            raise ConfigError(f"attention {self.name!r} has no causal form")
        if num_heads < 1 or head_dim < 1:
            raise ConfigError(
                f"num_heads and head_dim must be positive, got {num_heads}, {head_dim}"
            )
        self.num_heads = num_heads
        self.head_dim = head_dim
        self.causal = causal
        self.dropout = float(dropout) if self.uses_attn_dropout else 0.0
        self.last_stats: dict[str, float] = {}

    @abc.abstractmethod
    def forward(
        self, q: Tensor, k: Tensor, v: Tensor, attention_mask: Tensor | None = None
    ) -> Tensor:
        """(B, H, N, d) output in v's dtype."""

    @abc.abstractmethod
    def attention_matrix(
        self, q: Tensor, k: Tensor, attention_mask: Tensor | None = None
    ) -> Tensor:
        """Dense (B, H, N, N) matrix P with ``P @ v`` equal to the eval-mode forward (small N only)."""

    def options(self) -> dict[str, object]:
        """The mechanism's settings, recorded next to every benchmark row and run."""
        return {}

    def extra_repr(self) -> str:
        opts = ", ".join(f"{k}={v}" for k, v in self.options().items())
        return f"heads={self.num_heads}, head_dim={self.head_dim}, causal={self.causal}" + (
            f", {opts}" if opts else ""
        )


# ---------------------------------------------------------------------------------------------
# Masks


def key_mask_of(attention_mask: Tensor | None, q: Tensor) -> Tensor | None:
    """(B, N) bool, True = real token, or None when there is no padding to respect."""
    if attention_mask is None:
        return None
    if attention_mask.shape != (q.shape[0], q.shape[2]):
        raise ValueError(
            f"attention_mask has shape {tuple(attention_mask.shape)}, expected (B, N) = "
            f"({q.shape[0]}, {q.shape[2]})"
        )
    return attention_mask.to(device=q.device, dtype=torch.bool)


def visibility(
    key_mask: Tensor | None, n: int, causal: bool, device: torch.device
) -> Tensor | None:
    """Bool (B or 1, 1, N, N), True where query i may see key j; None when everything is visible.

    Every query also sees itself, which changes nothing for real queries and keeps padded rows
    (left padding under causal masking, for instance) from being entirely masked.
    """
    if key_mask is None and not causal:
        return None
    allowed = torch.ones(n, n, dtype=torch.bool, device=device)
    if causal:
        allowed = allowed.tril()
    allowed = allowed[None, None]
    if key_mask is not None:
        allowed = allowed & key_mask[:, None, None, :]
    return allowed | torch.eye(n, dtype=torch.bool, device=device)


def real_counts(key_mask: Tensor | None, batch: int, n: int, device: torch.device) -> Tensor:
    """(B,) number of real tokens per sequence."""
    if key_mask is None:
        return torch.full((batch,), n, device=device, dtype=torch.long)
    return key_mask.sum(-1)


# ---------------------------------------------------------------------------------------------
# Dtype policy


def core_dtype(x: Tensor) -> torch.dtype:
    """float64 stays float64 (tests); every other dtype computes in float32."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


@contextlib.contextmanager
def full_precision(device: torch.device) -> Iterator[None]:
    """Disable autocast so the core's matmuls stay in the dtype we cast them to."""
    with torch.autocast(device_type=device.type, enabled=False):
        yield


def upcast(*tensors: Tensor) -> tuple[Tensor, ...]:
    dtype = core_dtype(tensors[0])
    return tuple(t.to(dtype) for t in tensors)


def zero_padding(key_mask: Tensor | None, *tensors: Tensor) -> tuple[Tensor, ...]:
    """Zero padded rows so their junk (even inf/NaN) reaches no product or gradient: a masked
    key's zero weight times an infinite value is still NaN. masked_fill, not multiplication."""
    if key_mask is None:
        return tensors
    pad = ~key_mask[:, None, :, None]
    return tuple(t.masked_fill(pad, 0.0) for t in tensors)


def upcast_and_zero_padding(key_mask: Tensor | None, *tensors: Tensor) -> tuple[Tensor, ...]:
    """Upcast (dtype policy), and zero padded rows (``zero_padding``)."""
    return zero_padding(key_mask, *upcast(*tensors))


def masked_std(x: Tensor, key_mask: Tensor | None, dims: tuple[int, ...]) -> Tensor:
    """Unbiased standard deviation of the real entries of x (B, H, N, d) over ``dims``, keepdim.

    Padded positions (key_mask False) are excluded from the mean and the count.
    """
    if key_mask is None:
        return torch.std(x, dim=dims, keepdim=True)
    weight = key_mask[:, None, :, None].to(x.dtype).expand_as(x)
    x = torch.where(weight > 0, x, 0.0)  # padded junk (even inf/NaN) must not reach the sums
    count = weight.sum(dim=dims, keepdim=True)
    mean = (x * weight).sum(dim=dims, keepdim=True) / count
    var = (((x - mean) * weight) ** 2).sum(dim=dims, keepdim=True) / (count - 1).clamp_min(1)
    return var.sqrt()
