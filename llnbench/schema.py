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
    """A registered mechanism and its options (``conf/attention/<name>.yaml``: name + options).

    ``name`` is a built-in name, an entry-point name or a ``module.path:ClassName`` spec. The
    options are kept as given (plain values for config.yaml and checkpoints); ``build_attention``
    converts them to their annotated types.
    """

    name: str = "lln"
    options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_config(cls, data: Any, path: str = "attention") -> AttentionConfig:
        from llnbench.attention import check_options

        if isinstance(data, str):
            data = {"name": data}
        if isinstance(data, dict) and isinstance(data.get("options"), dict):
            # the dataclass's own plain form (as saved in checkpoints): {name, options: {...}}
            data = {"name": data.get("name"), **data["options"]}
        if not isinstance(data, dict) or "name" not in data:
            raise ConfigError(f"{path} needs a 'name' (a registered attention), got {data!r}")
        options = {k: v for k, v in data.items() if k != "name"}
        # an unknown name, an unknown option or an ill-typed value raises, naming it
        check_options(str(data["name"]), options, prefix=path)
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
