"""Run tracking: metrics.jsonl always, results.json at the end, W&B when enabled (rank 0 only).

W&B is best effort: a missing key means offline mode, and any W&B failure is reported once and
never stops a run.
"""

from __future__ import annotations

import json
import math
import netrc
import os
from pathlib import Path
from typing import Any

from rich.markup import escape

from llnbench import files
from llnbench.console import err_console as console
from llnbench.errors import LlnbenchError
from llnbench.schema import WandbConfig


def wandb_has_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        rc = netrc.netrc(os.environ.get("NETRC"))
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False
    host = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai").split("://")[-1].rstrip("/")
    return rc.authenticators(host) is not None


def resolve_wandb_mode(requested: str) -> str:
    """``disabled`` from the config or from WANDB_MODE wins; otherwise WANDB_MODE overrides the
    config; online without a configured key becomes offline."""
    env = {"dryrun": "offline"}.get(os.environ.get("WANDB_MODE", ""), os.environ.get("WANDB_MODE"))
    if "disabled" in (requested, env):
        return "disabled"
    mode = env if env in ("online", "offline") else requested
    if mode == "online" and not wandb_has_key():
        console.print("[dim]W&B: no API key configured, logging offline (wandb sync later)[/dim]")
        mode = "offline"
    return mode


def to_number(value: Any) -> Any:
    """Detached tensors and numpy scalars become Python numbers; NaN/inf become None (valid JSON)."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _damaged_json(path: Path) -> bool:
    """A file at ``path`` that does not parse as JSON (a missing file is not damaged)."""
    try:
        json.loads(path.read_bytes())
    except FileNotFoundError:
        return False
    except (OSError, ValueError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        return True
    return False


def json_safe(value: Any) -> Any:
    """``value`` with every NaN/inf (nested in dicts and lists too) as None: strict JSON, which
    ``json.dumps`` alone is not (it writes a bare ``NaN``)."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return to_number(value)


def write_failed(path: Path, err: OSError) -> LlnbenchError:
    """A run's file that could not be written (a full disk, say), as one line naming it."""
    reason = err.strerror or type(err).__name__
    return LlnbenchError(
        f"cannot write {path}: {reason}; every file written before is intact: free space (or "
        "fix the folder) and rerun the same command to continue"
    )


def read_jsonl(path: str | Path) -> tuple[list[dict[str, Any]], list[int]]:
    """The JSON objects of a ``metrics.jsonl`` and the 1-based numbers of the lines that are not
    one: the torn last line of a run killed while appending, or damage. No file: no rows."""
    rows, bad = [], []
    for number, _, row in _jsonl_lines(Path(path)):
        if row is None:
            bad.append(number)
        else:
            rows.append(row)
    return rows, bad


def _jsonl_lines(path: Path) -> list[tuple[int, bytes, dict[str, Any] | None]]:
    """(line number, raw line, its object or None when unreadable) for each non-blank line."""
    if not path.exists():
        return []
    out = []
    for number, raw in enumerate(path.read_bytes().splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            row = json.loads(raw.decode("utf-8"))
        except ValueError:  # JSONDecodeError and UnicodeDecodeError alike
            row = None
        out.append((number, raw, row if isinstance(row, dict) else None))
    return out


def truncate_metrics(path: Path, step: int, where: dict[str, Any] | None = None) -> None:
    """Drop rows past ``step`` (a killed run logged them after its last checkpoint; the resumed
    run logs them again, identically) and lines that cannot be read (a kill while appending
    tears the last one); ``where`` limits the step rule to rows with those values (one GLUE task
    and seed). Atomic rewrite."""
    lines = _jsonl_lines(path)
    if not lines:
        return
    where = where or {}
    kept, bad = [], []
    for number, raw, row in lines:
        if row is None:
            bad.append(number)
        elif not (all(row.get(k) == v for k, v in where.items()) and _step(row) > step):
            kept.append(raw + b"\n")
    if bad:
        console.print(
            f"note: {path}: dropped {_lines(bad)} that could not be read (written as the run "
            "was killed)",
            markup=False,
            highlight=False,
        )
    files.atomic_write(path, lambda handle: handle.write(b"".join(kept)))  # PathError: one line


def _step(row: dict[str, Any]) -> float:
    step = row.get("step")
    return step if isinstance(step, (int, float)) else 0


def _end_torn_line(path: Path) -> None:
    """A file whose last line was torn by a kill gets its newline back, so the next row starts
    on a line of its own (readers skip the fragment; a resume drops it)."""
    try:
        with path.open("rb+") as handle:
            if handle.seek(0, 2) and (handle.seek(-1, 2), handle.read(1))[1] != b"\n":
                handle.write(b"\n")
    except FileNotFoundError:
        pass


def _lines(numbers: list[int]) -> str:
    shown = ", ".join(map(str, numbers[:5])) + (", ..." if len(numbers) > 5 else "")
    return f"line{'s' if len(numbers) > 1 else ''} {shown}"


class Tracker:
    """One run's outputs: ``metrics.jsonl`` (appended), ``results.json``, optional W&B run."""

    def __init__(
        self,
        run_dir: str | Path,
        *,
        job: str,
        name: str,
        config: dict[str, Any],
        wandb_cfg: WandbConfig,
        enabled: bool = True,
        resume: bool = False,
    ):
        self.run_dir = Path(run_dir)
        self.job = job
        self.enabled = enabled
        self.metrics_path = self.run_dir / "metrics.jsonl"
        self._wandb = None
        if not enabled:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        _end_torn_line(self.metrics_path)
        mode = resolve_wandb_mode(wandb_cfg.mode)
        if mode != "disabled":
            self._wandb = _start_wandb(self.run_dir, job, name, config, wandb_cfg, mode, resume)

    def log(self, metrics: dict[str, Any], *, step: int | None = None) -> None:
        """Append one JSON line (flushed at once, so a killed run keeps every logged row)."""
        if not self.enabled:
            return
        row = {"step": step} if step is not None else {}
        row.update({k: to_number(v) for k, v in metrics.items()})
        try:
            with self.metrics_path.open("a") as handle:
                handle.write(json.dumps(row) + "\n")
        except OSError as err:  # a torn last line is mended by the next start
            raise write_failed(self.metrics_path, err) from None
        if self._wandb is not None:
            self._call_wandb(
                lambda run: run.log(row, step=step) if step is not None else run.log(row)
            )

    def table(self, key: str, rows: list[dict[str, Any]]) -> None:
        """A W&B table (scale rows, GLUE results); the same rows belong in the run's own files."""
        if self._wandb is None or not rows:
            return
        import wandb

        columns = list(dict.fromkeys(k for row in rows for k in row))
        data = [[_plain(row.get(c)) for c in columns] for row in rows]
        self._call_wandb(lambda run: run.log({key: wandb.Table(columns=columns, data=data)}))

    def image(self, key: str, path: str | Path) -> None:
        if self._wandb is None:
            return
        import wandb

        self._call_wandb(lambda run: run.log({key: wandb.Image(str(path))}))

    def finish(self, results: dict[str, Any] | None = None) -> None:
        """Write results.json atomically and close the W&B run with the final numbers as summary."""
        if not self.enabled:
            return
        if results is not None:  # "job" lets `llnbench report` sort run directories
            path = self.run_dir / "results.json"
            if _damaged_json(path):  # from an earlier run: say so, then replace it
                console.print(
                    f"llnbench: warning: {path} was damaged (not readable JSON); rewritten from "
                    "this run's results",
                    markup=False, highlight=False, soft_wrap=True,
                )  # fmt: skip
            files.write_json(path, json_safe({"job": self.job, **results}))  # PathError: one line
        if self._wandb is not None:
            if results is not None:
                flat = {k: to_number(v) for k, v in _flatten(results).items()}
                self._call_wandb(lambda run: run.summary.update(flat))
            self._call_wandb(lambda run: run.finish())
            self._wandb = None

    def _call_wandb(self, action) -> None:
        try:
            action(self._wandb)
        except Exception as err:  # W&B must never stop a run
            console.print(f"[yellow]W&B error, continuing without it: {escape(str(err))}[/yellow]")
            self._wandb = None


def _start_wandb(run_dir, job, name, config, cfg: WandbConfig, mode: str, resume: bool):
    try:
        import wandb

        run_id_file = run_dir / "wandb_run_id"
        run_id = run_id_file.read_text().strip() if resume and run_id_file.exists() else None
        run = wandb.init(
            project=cfg.project,
            entity=cfg.entity,
            group=cfg.group,
            tags=list(cfg.tags) or None,
            job_type=job,
            name=name,
            config=config,
            dir=str(run_dir),
            mode=mode,
            id=run_id,
            resume="allow" if run_id else None,
            settings=wandb.Settings(console="off", silent=True),
        )
        files.write_text(run_id_file, run.id)
        return run
    except Exception as err:  # no network, bad key, broken install: carry on without W&B
        console.print(
            f"[yellow]W&B unavailable ({type(err).__name__}: {escape(str(err))}); continuing[/yellow]"
        )
        return None


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{name}/"))
        elif isinstance(value, (int, float, str, bool)) or value is None:
            flat[name] = value
    return flat


def _plain(value: Any) -> Any:
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value)
    return to_number(value)
