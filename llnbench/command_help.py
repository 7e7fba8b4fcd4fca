"""The body of ``llnbench <job> --help``, read from ``conf/`` so that it stays true.

For each job: its config groups with every choice and the default (from the ``defaults`` list of
``conf/<job>.yaml`` and the files of each group's folder), its main keys with their defaults and
the comment beside them in the YAML, one example, and the word that extra arguments are Hydra
overrides (as HF's ``run_*`` scripts and Hydra apps say).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from llnbench.config import config_dir

# One example per job, each composed by tests/test_cli.py (so it cannot go stale).
EXAMPLES: dict[str, str] = {
    "pretrain": "llnbench pretrain attention=lln model=tiny trainer.max_steps=200",
    "glue": "llnbench glue task=sst2_rt pretrained=runs/pretrain/RUN trainer.seeds=[1,2,3]",
    "lra": "llnbench lra task=listops attention=lln trainer.max_steps=300",
    "analyze": "llnbench analyze attentions=[softmax,lln] seq_len=256 draws=2",
    "report": "llnbench report runs/pretrain runs/glue title='My runs'",
    "scale": "llnbench scale --max-len 4096 --attention softmax,lln --mode fwd",
}
# The trainer keys worth a line in the help (the rest: --print-config).
TRAINER_KEYS = ("max_steps", "epochs", "seeds", "batch_size", "lr", "precision", "device")
# What a group takes besides its files.
GROUP_EXTRAS = {
    "attention": "or module:Class (an outside mechanism)",
    "task": "(hub tasks need the network unless data.source=local; sst2_rt is offline)",
}
_COMMENT = re.compile(r"\s+#\s?(.*)$")


def _yaml_value(value: Any) -> str:
    """A default as a user would type it after ``key=``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ",".join(_yaml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{}" if not value else "{...}"
    return str(value)


def _read(path: Path) -> tuple[dict[str, Any], dict[str, str]]:
    """A YAML file's top-level mapping, and the comment on each top-level key's line."""
    text = path.read_text(encoding="utf-8")
    data = OmegaConf.to_container(OmegaConf.create(text)) if text.strip() else {}
    comments: dict[str, str] = {}
    last = None  # the key whose comment an indented comment-only line continues
    for line in text.splitlines():
        key, sep, rest = line.partition(":")
        if sep and key and not key[0].isspace() and not key.startswith("#"):
            match = _COMMENT.search(rest)
            last = key.strip() if match else None
            if match:
                comments[last] = match.group(1).strip()
        elif last and line[:1].isspace() and line.strip().startswith("#"):
            comments[last] += " " + line.strip().lstrip("#").strip()
        else:
            last = None
    return (data if isinstance(data, dict) else {}), comments


def _groups(data: dict[str, Any]) -> list[tuple[str, Any]]:
    """(group, default) of a job's defaults list, in its order (``_self_`` and overrides left
    out)."""
    groups = []
    for entry in data.get("defaults") or []:
        if isinstance(entry, dict):
            for group, default in entry.items():
                if not str(group).startswith("override"):
                    groups.append((str(group), default))
    return groups


def _choices(root: Path, group: str) -> list[str]:
    return sorted(p.stem for p in (root / group).glob("*.yaml"))


def _rows(rows: list[tuple[str, str]], widest: int = 28) -> list[str]:
    """Two aligned columns; a left cell wider than ``widest`` puts its right cell below it."""
    width = max((len(left) for left, _ in rows if len(left) <= widest), default=0)
    lines = []
    for left, right in rows:
        if len(left) > widest and right:
            lines += [f"  {left}", f"  {'':{width}}  {right}"]
        else:
            lines.append(f"  {left.ljust(width)}  {right}".rstrip())
    return lines


def job_help(job: str, root: Path | None = None) -> str:
    """The help body of ``llnbench job``: groups, main keys, an example, the override rule."""
    root = root or config_dir()
    data, comments = _read(root / f"{job}.yaml")
    lines: list[str] = []
    groups = _groups(data)
    if groups:
        lines.append(f"Config groups (group=choice; default in *stars*; conf/{job}.yaml):")
        group_rows = []
        for group, default in groups:
            marked = [f"*{c}*" if c == default else c for c in _choices(root, group)]
            none = "" if default is not None else "; default: none"
            extra = f" {GROUP_EXTRAS[group]}" if group in GROUP_EXTRAS else ""
            group_rows.append((group, ", ".join(marked) + none + extra))
        lines += _rows(group_rows)
        lines.append("")
    lines.append("Main keys (key=value) and their defaults:")
    key_rows = []
    nested = []
    for key, value in data.items():
        if key == "defaults":
            continue
        if isinstance(value, dict) and value:
            nested.append(key)
            continue
        comment = comments.get(key, "")
        key_rows.append((f"{key}={_yaml_value(value)}", comment))
    defaults = dict(groups)
    if defaults.get("trainer"):
        trainer, trainer_comments = _read(root / "trainer" / f"{defaults['trainer']}.yaml")
        for key in TRAINER_KEYS:
            if key in trainer:
                comment = trainer_comments.get(key, "")
                key_rows.append((f"trainer.{key}={_yaml_value(trainer[key])}", comment))
    if defaults.get("wandb"):
        wandb, wandb_comments = _read(root / "wandb" / f"{defaults['wandb']}.yaml")
        if "mode" in wandb:
            key_rows.append((f"wandb.mode={wandb['mode']}", wandb_comments.get("mode", "")))
    lines += _rows(key_rows)
    if nested:
        lines.append(f"  ({', '.join(k + '.*' for k in nested)}: see --print-config)")
    lines.append("")
    lines.append("Example:")
    lines.append(f"  {EXAMPLES[job]}")
    lines.append("")
    lines.append(
        "Extra arguments are Hydra overrides: key=value, group=choice, +key=value (a new key); "
        "a comma list sweeps with --multirun; --print-config shows the whole composed config."
    )
    return "\n".join(lines)
