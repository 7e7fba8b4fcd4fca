"""Small helpers shared by the tests (imported as ``from helpers import ...``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

# The input builders and checks live in llnbench.testing (the kit researchers use on their own
# mechanisms); the built-in tests import them from there or, as before, from here.
from llnbench.testing import (  # noqa: F401
    check_padding,
    qkv,
    real_rows,
    right_padding_mask,
    with_junk_padding,
)

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
        path, text = folder / f"doc{i:03d}.txt", " ".join(lines) + "\n"
        if not path.is_file() or path.read_text() != text:  # same files keep their fingerprint
            path.write_text(text)
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


def run_under_triton_interpreter(checks: Path) -> None:
    """Run the pytest file ``checks`` in a child process with TRITON_INTERPRET=1 (it must be set
    before triton is imported) and insist that every one of its tests passed."""
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONWARNINGS": "ignore"}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(checks)],
        cwd=checks.parent.parent, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert " passed" in summary and "failed" not in summary and "skipped" not in summary, summary
