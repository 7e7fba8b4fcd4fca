"""Small helpers shared by the tests (imported as ``from helpers import ...``)."""

from __future__ import annotations

import torch


def qkv(b: int, h: int, n: int, d: int, dtype=torch.float64, scale: float = 1.0, seed: int = 0):
    """Three (B, H, N, d) Gaussian tensors."""
    gen = torch.Generator().manual_seed(seed)
    return tuple(scale * torch.randn(b, h, n, d, generator=gen, dtype=dtype) for _ in range(3))


def right_padding_mask(lengths: list[int], n: int) -> torch.Tensor:
    """(B, N) bool, True on the first ``lengths[b]`` positions."""
    return torch.arange(n)[None, :] < torch.tensor(lengths)[:, None]


def with_junk_padding(x: torch.Tensor, mask: torch.Tensor, value: float = 1e4) -> torch.Tensor:
    """x with every padded position (mask False) overwritten by a large junk value."""
    return x.masked_fill(~mask[:, None, :, None], value)


WORDS = (
    "the cat sat on a mat while the dog ran to the park and a bird sang in the tree "
    "people read books about history science and music every day in the quiet library"
).split()


def write_corpus(folder, documents: int = 24, sentences: int = 30, seed: int = 0):
    """A small local corpus of .txt files (one document each) with learnable word order."""
    import random

    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(documents):
        lines = []
        for _ in range(sentences):
            start = rng.randrange(len(WORDS) - 8)
            lines.append(" ".join(WORDS[start : start + rng.randint(5, 8)]).capitalize() + ".")
        (folder / f"doc{i:03d}.txt").write_text(" ".join(lines) + "\n")
    return folder


def tiny_pretrain_args(tmp_path, run_dir, *extra: str) -> list[str]:
    """Overrides for a seconds-long pretraining run on a local corpus."""
    train = write_corpus(tmp_path / "train", documents=20)
    valid = write_corpus(tmp_path / "valid", documents=4, seed=1)
    return [
        "data=local", f"data.train_file={train}", f"data.validation_file={valid}",
        f"data.cache_dir={tmp_path / 'cache'}", "model.layers=1", "model.hidden=64",
        "model.heads=1", "model.ffn=128", "model.max_len=32", "trainer.batch_size=4",
        "trainer.max_steps=6", "trainer.log_every=2", "trainer.eval_every=3",
        "trainer.checkpoint_every=3", "eval_blocks=8", "wandb.mode=disabled",
        f"run_dir={run_dir}", *extra,
    ]  # fmt: skip


def real_rows(mask: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """Bool index of the real (unpadded) rows of a (B, H, N, d) output."""
    return mask[:, None, :, None].expand_as(out)


def check_padding(
    attn, *, d: int, lengths: tuple[int, int] = (30, 19), junk: float = 1e4, compare: bool = True
) -> None:
    """Junk padding (even NaN) plus the mask: finite outputs; real rows equal the unpadded run
    (``compare``, for deterministic mechanisms); gradients finite, and zero on padded positions."""
    n, n_b = lengths[0], lengths[1]
    q, k, v = (t.requires_grad_() for t in qkv(2, 2, n, d))
    mask = right_padding_mask(list(lengths), n)
    out = attn(*(with_junk_padding(t, mask, junk) for t in (q, k, v)), mask)
    assert torch.isfinite(out).all()
    if compare:
        clean = attn(q[1:, :, :n_b], k[1:, :, :n_b], v[1:, :, :n_b])
        torch.testing.assert_close(out[1:, :, :n_b], clean, atol=1e-10, rtol=0)
    out[real_rows(mask, out)].sum().backward()
    pad = ~mask[:, None, :, None]
    for t in (q, k, v):
        assert torch.isfinite(t.grad).all() and torch.all(t.grad.masked_select(pad) == 0)
