"""Find run directories under the given paths and sort them by job."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from llnbench.errors import DataError
from llnbench.tracking import read_jsonl

JOBS = ("scale", "pretrain", "glue", "analyze", "lra")
# Folders below an input that hold tooling runs, not the user's own: `make gpu-check` (and its
# --dry-run) writes tiny runs of every job under runs/gpu-check/. Named as an input, they count.
SKIPPED_UNLESS_NAMED = ("gpu-check",)


@dataclass
class Run:
    path: Path
    job: str
    results: dict[str, Any]
    config: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # what could not be read, for the report

    def metrics(self) -> list[dict[str, Any]]:
        """The rows of metrics.jsonl; unreadable lines (a torn last line) are skipped and named."""
        path = self.path / "metrics.jsonl"
        rows, bad = read_jsonl(path)
        if bad:
            self.note(f"{path}: skipped unreadable line{'s' if len(bad) > 1 else ''} "
                      f"{', '.join(map(str, bad[:5]))}{', ...' if len(bad) > 5 else ''}")  # fmt: skip
        return rows

    def json(self, name: str) -> dict[str, Any]:
        """A JSON file of the run; DataError naming it when it cannot be read."""
        return read_json(self.path / name)

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)


def read_json(path: Path) -> dict[str, Any]:
    """A run's JSON file as a mapping; DataError naming the file and why it cannot be used."""
    data = _read_mapping(path, "JSON", json.loads, json.JSONDecodeError)
    if data is None:
        raise DataError(f"{path}: not a JSON mapping")
    return data


def read_yaml(path: Path) -> dict[str, Any]:
    """A run's config.yaml as a mapping ({} when absent); DataError as ``read_json``."""
    if not path.exists():
        return {}
    return _read_mapping(path, "YAML", yaml.safe_load, yaml.YAMLError) or {}


def _read_mapping(path: Path, kind: str, parse, syntax_error: type[Exception]) -> Any:
    """The parsed file when it is a mapping or empty (None)."""
    try:
        data = parse(path.read_bytes().decode("utf-8"))
    except OSError as err:
        raise DataError(f"{path}: cannot be read ({err.strerror})") from None
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text") from None
    except syntax_error as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DataError(f"{path}: not valid {kind} ({first})") from None
    if data is not None and not isinstance(data, dict):
        raise DataError(f"{path}: not a {kind} mapping")
    return data


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


def find_runs(
    inputs: list[str],
    exclude: Path | None = None,
    problems: list[str] | None = None,
    left_out: list[Path] | None = None,
) -> dict[str, list[Run]]:
    """Every run directory (a folder with results.json) below the inputs, grouped by job.

    A run whose results.json or config.yaml cannot be read is left out, and the reason appended
    to ``problems``, so one damaged folder never hides the others. Folders named in
    ``SKIPPED_UNLESS_NAMED`` below an input are not searched; they are appended to ``left_out``."""
    problems = [] if problems is None else problems
    left_out = [] if left_out is None else left_out
    found: dict[str, list[Run]] = {job: [] for job in JOBS}
    seen: set[Path] = set()
    for given in inputs:
        root = Path(given)
        if not root.exists():
            raise DataError(f"report input {given!r} does not exist")
        if not root.is_dir():
            raise DataError(f"report input {given!r} is a file; give run directories (or runs/)")
        candidates = []
        for folder, dirs, names in os.walk(root, followlinks=True):
            for name in [d for d in dirs if d in SKIPPED_UNLESS_NAMED]:
                dirs.remove(name)  # os.walk then does not descend into it
                left_out.append(Path(folder) / name)
            if "results.json" in names:
                candidates.append(Path(folder) / "results.json")
        candidates.sort()
        for results_path in candidates:
            path = results_path.parent.resolve()
            if path in seen or (exclude is not None and path == exclude.resolve()):
                continue
            if (path.parent / "results.json").exists() and path.parent in seen:
                continue  # a GLUE seed folder inside a GLUE run
            seen.add(path)
            try:
                results = read_json(results_path)
                job = job_of(path, results)
                if job is None:
                    continue  # a results.json of some other tool
                config = read_yaml(path / "config.yaml")
            except DataError as err:
                problems.append(f"skipped {err}")
                continue
            found[job].append(Run(path, job, results, config))
    return found
