"""What one benchmark cell runs: a closure timed and measured by ``bench.timing``.

Layer scope: one attention core on (B, H, N, d) Gaussian inputs. Model scope: one training step of
the whole RoBERTa (forward, MLM loss, backward, AdamW step), batch 1 as the LLN paper's Table 2.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import torch

from llnbench.attention import build_attention
from llnbench.compiling import maybe_compile, step_begin
from llnbench.errors import ConfigError, one_of
from llnbench.model.roberta import IGNORE_INDEX, ModelConfig, RobertaForMaskedLM
from llnbench.schema import AttentionConfig

SDPA_BACKENDS = ("auto", "default", "cudnn", "flash", "efficient", "math")
# what ``auto`` times, one series each (softmax[cudnn], ...); the fastest per cell is ``softmax``
SDPA_CUDA = ("cudnn", "flash", "efficient")
SDPA_CPU = ("flash", "math")  # the others have no CPU kernel
BENCH_PAD_ID = 1  # any id works: benchmark inputs contain no padding


def check_builds(
    name: str, options: dict[str, Any], *, heads: int, head_dim: int, causal: bool
) -> None:
    """Build ``name`` once with its options: a value it cannot take stops the job before any file
    is written (inside a cell it would only become an error row)."""
    try:
        build_attention(name, num_heads=heads, head_dim=head_dim, causal=causal, **options)
    except (TypeError, ValueError) as err:
        raise option_error(name, options, err) from None


def option_error(name: str, options: dict[str, Any], err: Exception) -> ConfigError:
    return ConfigError(f"bad options.{name} {options} for attention {name!r}: {err}")


def layer_call(
    name: str, options: dict[str, Any], *, batch: int, heads: int, head_dim: int, n: int,
    causal: bool, mode: str, device: torch.device, dtype: torch.dtype, compile: bool | str = False,
    dynamic: bool | None = None,
) -> Callable[[], None]:  # fmt: skip
    """One forward (no_grad, eval) or forward + backward (train) of one attention core."""
    attn = build_attention(name, num_heads=heads, head_dim=head_dim, causal=causal, **options)
    attn = attn.to(device)
    run = maybe_compile(attn, compile, dynamic)
    shape = (batch, heads, n, head_dim)
    grad = mode == "fwdbwd"
    q, k, v = (torch.randn(shape, device=device, dtype=dtype, requires_grad=grad) for _ in "qkv")

    def forward() -> torch.Tensor:
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            return run(q, k, v)

    if mode == "fwd":
        attn.eval()
        return _timed_module(_no_grad(forward), attn)
    attn.train()
    grad_out = torch.randn(shape, device=device, dtype=dtype)

    def forward_backward() -> None:
        step_begin(compile)
        forward().backward(grad_out)
        q.grad = k.grad = v.grad = None
        attn.zero_grad(set_to_none=True)

    return _timed_module(forward_backward, attn)


def model_call(
    model_cfg: ModelConfig, attention: AttentionConfig, *, batch: int, n: int, mode: str,
    device: torch.device, dtype: torch.dtype, compile: bool | str = False,
    dynamic: bool | None = None,
) -> Callable[[], None]:  # fmt: skip
    """One training step of RobertaForMaskedLM (fwdbwd) or one forward with loss (fwd)."""
    from llnbench.train.config import TrainerConfig
    from llnbench.train.optim import build_optimizer

    cfg = dataclasses.replace(model_cfg, max_len=max(model_cfg.max_len, n))
    model = RobertaForMaskedLM(cfg, attention, BENCH_PAD_ID).to(device)
    run = maybe_compile(model, compile, dynamic)
    ids = torch.randint(5, 50257, (batch, n), device=device)
    labels = torch.where(torch.rand(batch, n, device=device) < 0.15, ids, IGNORE_INDEX)
    autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)

    def forward() -> torch.Tensor:
        with autocast:
            return run(ids, labels)[0]

    if mode == "fwd":
        model.eval()
        return _timed_module(_no_grad(forward), model)
    model.train()
    optimizer = build_optimizer(model, TrainerConfig())

    def train_step() -> None:
        step_begin(compile)
        forward().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return _timed_module(train_step, model)


def _timed_module(fn: Callable[[], None], module: torch.nn.Module) -> Callable[[], None]:
    fn.module = module  # type: ignore[attr-defined]  # what ran: backends_used
    return fn


def backends_used(fn: Callable[[], None]) -> str | None:
    """The backends the attention cores of a timed call ran on (after a call), '+'-joined."""
    module = getattr(fn, "module", None)
    if module is None:
        return None
    seen = {getattr(m, "last_backend", None) for m in module.modules()} - {None}
    return "+".join(sorted(seen)) or None


def _no_grad(fn: Callable[[], torch.Tensor]) -> Callable[[], None]:
    def call() -> None:
        with torch.no_grad():
            fn()

    return call


def sdpa_candidates(device: torch.device) -> tuple[str, ...]:
    """The SDPA kernels that can run on this device type, fastest-first on Hopper."""
    return SDPA_CUDA if device.type == "cuda" else SDPA_CPU


def sdpa_backend_names(requested: str, device: torch.device) -> list[str]:
    """The SDPA backends softmax is timed on: ``auto`` every candidate of the device (the fastest
    of them per cell is the baseline), ``default`` PyTorch's own choice, else the one pinned."""
    if requested not in SDPA_BACKENDS:
        raise one_of("SDPA backend", requested, SDPA_BACKENDS)
    return list(sdpa_candidates(device)) if requested == "auto" else [requested]


@contextlib.contextmanager
def sdpa_backend(name: str) -> Iterator[None]:
    """Pin SDPA to one backend, with no fallback: a kernel that cannot run is an error row."""
    if name == "default":
        yield
        return
    from torch.nn.attention import SDPBackend, sdpa_kernel

    backend = {
        "flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION,
        "cudnn": SDPBackend.CUDNN_ATTENTION, "math": SDPBackend.MATH,
    }[name]  # fmt: skip
    with sdpa_kernel(backend):
        yield
