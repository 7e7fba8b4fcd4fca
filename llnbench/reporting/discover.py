"""Find run directories under the given paths and sort them by job."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from llnbench.errors import DataError

JOBS = ("scale", "pretrain", "glue", "analyze", "lra")


@dataclass
class Run:
    path: Path
    job: str
    results: dict[str, Any]
    config: dict[str, Any] = field(default_factory=dict)

    def metrics(self) -> list[dict[str, Any]]:
        path = self.path / "metrics.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def json(self, name: str) -> dict[str, Any]:
        return json.loads((self.path / name).read_text())


def job_of(path: Path, results: dict[str, Any]) -> str | None:
    """results.json names its job; older runs are recognised by their files."""
    if results.get("job") in JOBS:
        return results["job"]
    if (path / "scale.json").exists():
        return "scale"
    if "unigram_loss" in (results.get("final") or {}):
        return "pretrain"
    if results.get("mode") in ("synthetic", "checkpoint"):
        return "analyze"
    if "tasks" in results or "glue_average" in results:
        return "glue"
    return None


def find_runs(inputs: list[str], exclude: Path | None = None) -> dict[str, list[Run]]:
    """Every run directory (a folder with results.json) below the inputs, grouped by job."""
    found: dict[str, list[Run]] = {job: [] for job in JOBS}
    seen: set[Path] = set()
    for given in inputs:
        root = Path(given)
        if not root.exists():
            raise DataError(f"report input {given!r} does not exist")
        candidates = sorted(
            Path(folder) / "results.json"
            for folder, _, names in os.walk(root, followlinks=True)
            if "results.json" in names
        )
        for results_path in candidates:
            path = results_path.parent.resolve()
            if path in seen or (exclude is not None and path == exclude.resolve()):
                continue
            if (path.parent / "results.json").exists() and path.parent in seen:
                continue  # a GLUE seed folder inside a GLUE run
            seen.add(path)
            try:
                results = json.loads(results_path.read_text())
            except (OSError, json.JSONDecodeError):
                continue  # a torn or foreign file is not a run
            job = job_of(path, results)
            if job is None:
                continue
            config_path = path / "config.yaml"
            config = yaml.safe_load(config_path.read_text()) if config_path.exists() else {}
            found[job].append(Run(path, job, results, config or {}))
    return found
