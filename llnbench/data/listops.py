"""ListOps (Nangia & Bowman 2018) as the Long Range Arena generates it (Tay et al. 2020).

A random tree of MAX, MIN, MED (median, rounded down) and SM (sum modulo 10) over the digits 0–9,
written prefix with a closing bracket: ``[MAX 2 9 [MIN 4 7 ] 0 ]`` → 9. The label is the value of
the whole expression, 10 classes. LRA's rules: a node above the depth limit is an operator with
probability 0.25 (else a digit), an operator has 2 to ``max_args`` arguments, the tree's length in
tokens (digits, operators and brackets) lies strictly between ``min_length`` and ``max_length``
(rejection sampling), and every expression in the data set is distinct.

Tokens are small integers (``VOCAB``); sequences are stored as ``uint8``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np

from llnbench.errors import ConfigError

PAD, CLS = 0, 1  # the model's padding and classification tokens
DIGIT0 = 2  # digits 0-9 are tokens 2-11
OPERATORS = ("[MAX", "[MIN", "[MED", "[SM")
OPERATOR0 = DIGIT0 + 10  # tokens 12-15
CLOSE = OPERATOR0 + len(OPERATORS)  # "]", token 16
VOCAB = ("<pad>", "<cls>", *map(str, range(10)), *OPERATORS, "]")
OPERATOR_P = 0.25  # LRA's VALUE_P: a node above the depth limit is an operator this often
NUM_CLASSES = 10
SHORTEST = 4  # the shortest expression: "[MAX 1 2 ]"
# rejection sampling gives up after this many draws per requested example (a length window
# that the tree distribution almost never produces)
MAX_DRAWS_PER_EXAMPLE = 2000


@dataclass(frozen=True)
class ListOpsSpec:
    """The generator's parameters (LRA: depth 10, 10 arguments, lengths in (500, 2000))."""

    max_depth: int = 10
    max_args: int = 10
    min_length: int = 500
    max_length: int = 2000

    def validate(self) -> None:
        if self.max_depth < 2:
            raise ConfigError(f"data.max_depth must be at least 2, got {self.max_depth}")
        if self.max_args < 2:
            raise ConfigError(f"data.max_args must be at least 2, got {self.max_args}")
        if self.min_length < 0:
            raise ConfigError(f"data.min_length must be >= 0, got {self.min_length}")
        shortest = max(SHORTEST, self.min_length + 1)
        if self.max_length <= shortest:
            raise ConfigError(
                f"data.max_length={self.max_length} is too short for task listops: expressions "
                f"are longer than data.min_length={self.min_length} and at least {SHORTEST} "
                f"tokens, so data.max_length must be at least {shortest + 1}"
            )


def _apply(op: int, values: list[int]) -> int:
    if op == 0:
        return max(values)
    if op == 1:
        return min(values)
    if op == 2:  # LRA: int(np.median(values)), i.e. the mean of the middle two, rounded down
        ordered, mid = sorted(values), len(values) // 2
        return ordered[mid] if len(values) % 2 else (ordered[mid - 1] + ordered[mid]) // 2
    return sum(values) % 10


def _node(rng: random.Random, depth: int, spec: ListOpsSpec, out: list[int]) -> int | None:
    """Append one subtree's tokens to ``out`` and return its value; None once ``out`` reaches
    ``max_length`` (the tree would be rejected anyway, so stop building it)."""
    if depth < spec.max_depth and rng.random() <= OPERATOR_P:
        op = rng.randrange(len(OPERATORS))
        out.append(OPERATOR0 + op)
        values = []
        for _ in range(rng.randint(2, spec.max_args)):
            value = _node(rng, depth + 1, spec, out)
            if value is None:
                return None
            values.append(value)
        out.append(CLOSE)
        return _apply(op, values) if len(out) < spec.max_length else None
    value = rng.randrange(10)
    out.append(DIGIT0 + value)
    return value if len(out) < spec.max_length else None


def sample(rng: random.Random, spec: ListOpsSpec) -> tuple[list[int], int]:
    """One expression inside the length window: (tokens, label)."""
    for _ in range(MAX_DRAWS_PER_EXAMPLE):
        tokens: list[int] = []
        value = _node(rng, 1, spec, tokens)
        if value is not None and len(tokens) > spec.min_length:
            return tokens, value
    raise ConfigError(
        f"ListOps lengths in ({spec.min_length}, {spec.max_length}) with max_depth="
        f"{spec.max_depth}, max_args={spec.max_args} are too rare to sample "
        f"({MAX_DRAWS_PER_EXAMPLE} draws without one); widen the window"
    )


def generate(
    count: int, spec: ListOpsSpec, seed: str, exclude: set[bytes] | None = None
) -> tuple[list[np.ndarray], np.ndarray, set[bytes]]:
    """``count`` distinct expressions (none of them in ``exclude``), seeded by the string
    ``seed``: (token arrays, labels, the set of their byte strings)."""
    spec.validate()
    rng = random.Random(seed)  # str seeds hash with sha512: stable across runs and platforms
    seen = set(exclude or ())
    kept: set[bytes] = set()
    sequences, labels, repeats = [], [], 0
    while len(sequences) < count:
        tokens, label = sample(rng, spec)
        key = bytes(tokens)
        if key in seen:
            repeats += 1
            if repeats > 10 * count + 1000:
                raise too_few_distinct(spec, len(sequences), count)
            continue
        seen.add(key)
        kept.add(key)
        sequences.append(np.frombuffer(key, dtype=np.uint8))
        labels.append(label)
    return sequences, np.asarray(labels, dtype=np.int64), kept


def too_few_distinct(spec: ListOpsSpec, found: int, wanted: int) -> ConfigError:
    return ConfigError(
        f"ListOps lengths in ({spec.min_length}, {spec.max_length}) hold too few distinct "
        f"expressions ({found:,} found, {wanted:,} wanted); widen the length window or ask for "
        "fewer examples"
    )


def to_text(tokens) -> str:
    """The expression as LRA writes it, without the parentheses of its tuple rendering."""
    return " ".join(VOCAB[int(t)] for t in tokens)
