"""Typed config pieces shared by several jobs (each job module defines its own top-level config)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from llnbench.errors import ConfigError

WandbMode = Literal["online", "offline", "disabled"]
Precision = Literal["fp32", "bf16", "fp16"]
Device = Literal["auto", "cpu", "cuda"]


@dataclass
class AttentionConfig:
    """A registered mechanism and its options (``conf/attention/<name>.yaml``: name + options)."""

    name: str = "lln"
    options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_config(cls, data: Any, path: str = "attention") -> AttentionConfig:
        from llnbench.attention import attention_options

        if isinstance(data, str):
            data = {"name": data}
        if isinstance(data, dict) and isinstance(data.get("options"), dict):
            # the dataclass's own plain form (as saved in checkpoints): {name, options: {...}}
            data = {"name": data.get("name"), **data["options"]}
        if not isinstance(data, dict) or "name" not in data:
            raise ConfigError(f"{path} needs a 'name' (a registered attention), got {data!r}")
        options = {k: v for k, v in data.items() if k != "name"}
        allowed = attention_options(str(data["name"]))  # raises for an unknown name
        unknown = sorted(set(options) - set(allowed))
        if unknown:
            raise ConfigError(
                f"unknown option {path}.{unknown[0]} for attention {data['name']!r}; allowed: "
                f"{', '.join(sorted(allowed)) or '(none)'}"
            )
        return cls(name=str(data["name"]), options=options)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, **self.options}


@dataclass
class WandbConfig:
    """Weights & Biases: ``online`` falls back to ``offline`` when no API key is configured."""

    mode: WandbMode = "online"
    project: str = "llnbench"
    entity: str | None = None
    group: str | None = None
    tags: list[str] = field(default_factory=list)
