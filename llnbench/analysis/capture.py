"""What each attention layer of a model sees: q, k and the padding mask, captured by hooks.

A forward pre-hook on every attention core (``Encoder.attention_cores()``) records the
``(q, k, v, attention_mask)`` the core is called with, (B, H, N, d) each, during one eval-mode
forward of the encoder. ``measure_layers`` then runs ``concentration.measure`` per layer with that
layer's own module, so the instruments are those of the matrices the model actually used (the same
LLN temperatures, the same mask). Used by checkpoint mode of ``llnbench analyze`` and by the
instruments logged during pretraining (``probe.TrainingProbe``).

A capture leaves the model as it found it: training mode, the global RNG streams (forked), and the
cores' ``last_stats`` (which ``train/attn/*`` logging reads) are restored; autocast is off, so q, k
come in the model's own dtype.
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from llnbench.analysis.concentration import Measurement, attention_matrices, measure

_CORE_ARGS = ("q", "k", "v", "attention_mask")


@dataclass
class LayerInputs:
    """The inputs one attention core received: q, k (and v when kept) (B, H, N, d), mask (B, N)."""

    q: Tensor
    k: Tensor
    mask: Tensor | None
    v: Tensor | None = None


def attention_cores(model: nn.Module) -> list[nn.Module]:
    """The attention cores of a RoBERTa model (or of its encoder), first layer first."""
    encoder = getattr(model, "encoder", model)
    cores = getattr(encoder, "attention_cores", None)
    if cores is None:
        raise TypeError(f"{type(model).__name__} has no encoder with attention_cores()")
    return list(cores())


@contextlib.contextmanager
def capturing(cores: Sequence[nn.Module], *, keep_v: bool = False) -> Iterator[list]:
    """Within the block, every call of ``cores[i]`` stores its inputs in ``captured[i]``.

    Yields the list (``LayerInputs`` per core, None until the core runs); hooks are removed on exit.
    """
    captured: list[LayerInputs | None] = [None] * len(cores)

    def hook_for(index: int):
        def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
            values = dict(zip(_CORE_ARGS, args)) | {k: v for k, v in kwargs.items()}
            mask = values.get("attention_mask")
            captured[index] = LayerInputs(
                q=values["q"].detach(),
                k=values["k"].detach(),
                mask=None if mask is None else mask.detach(),
                v=values["v"].detach() if keep_v else None,
            )

        return hook

    handles = [
        core.register_forward_pre_hook(hook_for(i), with_kwargs=True)
        for i, core in enumerate(cores)
    ]
    try:
        yield captured
    finally:
        for handle in handles:
            handle.remove()


@torch.no_grad()
def capture_qk(
    model: nn.Module, input_ids: Tensor, attention_mask: Tensor | None = None, *, keep_v=False
) -> list[LayerInputs]:
    """One eval-mode forward of ``model``'s encoder on ``input_ids`` (B, N); each layer's inputs.

    ``attention_mask`` is (B, N), 1 = real token (None: all real). Only the encoder runs (no MLM
    head). The model's mode, RNG streams and the cores' ``last_stats`` are left untouched.
    """
    encoder = getattr(model, "encoder", model)
    cores = attention_cores(model)
    was_training = model.training
    saved = _last_stats(model)
    device = input_ids.device
    cuda = [device.index if device.index is not None else torch.cuda.current_device()] if (
        device.type == "cuda"
    ) else []  # fmt: skip
    try:
        with (
            torch.random.fork_rng(devices=cuda),
            torch.autocast(device.type, enabled=False),
            capturing(cores, keep_v=keep_v) as captured,
        ):
            model.eval()
            encoder(input_ids, attention_mask)
    finally:
        model.train(was_training)
        _restore_last_stats(saved)
    missing = [i for i, c in enumerate(captured) if c is None]
    if missing:
        raise RuntimeError(f"attention cores of layers {missing} were not called by the encoder")
    return captured  # type: ignore[return-value]


def _last_stats(model: nn.Module) -> list[tuple[nn.Module, dict]]:
    return [
        (m, dict(m.last_stats))
        for m in model.modules()
        if isinstance(m.__dict__.get("last_stats"), dict)
    ]


def _restore_last_stats(saved: list[tuple[nn.Module, dict]]) -> None:
    for module, stats in saved:
        module.last_stats = stats


def measure_layers(
    cores: Sequence[nn.Module], captured: Sequence[LayerInputs], *, gap: bool = True
) -> list[Measurement]:
    """``concentration.measure`` per layer: each core on its own captured q, k and mask.

    Per-head values are means over the batch's sequences, each measured at its real length.
    """
    return [
        measure(core, inputs.q, inputs.k, inputs.mask, gap=gap)
        for core, inputs in zip(cores, captured)
    ]


def layer_instruments(
    model: nn.Module,
    input_ids: Tensor,
    attention_mask: Tensor | None = None,
    *,
    gap: bool = True,
    keys: Sequence[str] | None = None,
) -> dict[str, float]:
    """Instruments per layer, mean over heads: ``{"layer{i}/{name}": value, "mean/{name}": ...}``.

    ``mean/*`` averages the layers. ``keys`` keeps only those instruments (LLN-branch variants
    ``lln_branch_<key>`` of lln_diag included); None keeps all that ``measure`` gives.
    """
    cores = attention_cores(model)
    layers = measure_layers(cores, capture_qk(model, input_ids, attention_mask), gap=gap)
    return flatten_layers([m.means() for m in layers], keys)


def flatten_layers(
    layer_means: Sequence[dict[str, float]], keys: Sequence[str] | None = None
) -> dict[str, float]:
    """``[{name: value}]`` per layer -> ``layer{i}/{name}`` and ``mean/{name}`` (NaN-aware)."""
    out: dict[str, float] = {}
    names: list[str] = []
    for i, means in enumerate(layer_means):
        for name, value in means.items():
            if keys is not None and name.removeprefix("lln_branch_") not in keys:
                continue
            out[f"layer{i}/{name}"] = value
            if name not in names:
                names.append(name)
    for name in names:
        values = [m[name] for m in layer_means if name in m and math.isfinite(m[name])]
        out[f"mean/{name}"] = sum(values) / len(values) if values else math.nan
    return out


@torch.no_grad()
def example_matrices(core: nn.Module, inputs: LayerInputs, index: int = 0) -> dict[str, Tensor]:
    """The attention matrices of sequence ``index`` as the layer computed them, (H, n, n) float64.

    Keys as ``concentration.attention_matrices`` (``""`` the module's own, ``lln_branch_`` the LLN
    branch of lln_diag); n is the sequence's real length. The whole batch goes through the matrix
    so batch-pooled statistics (LLN's σ_q, σ_k) are the ones the model used.
    """
    module = copy.deepcopy(core).to(torch.float64).eval()
    q, k, mask = inputs.q.double(), inputs.k.double(), inputs.mask
    real = slice(None) if mask is None else mask[index].bool()
    out = {}
    for prefix, matrix in attention_matrices(module).items():
        p = matrix(q, k, mask)[index]
        out[prefix] = p[:, real][:, :, real].cpu() if mask is not None else p.cpu()
    return out
