"""The ``llnbench`` command line: one Typer command per job, Hydra overrides as extra arguments.

    llnbench pretrain attention=lln
    llnbench glue task=sst2 pretrained=runs/pretrain/...
    llnbench scale --max-len 16384 --attention softmax,lln

Typer options become overrides; the composed config becomes the job's dataclass (config.py); the
job runs. User errors print one line on stderr and exit 2, without a traceback.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.text import Text

from llnbench import files
from llnbench.console import err_console
from llnbench.errors import ConfigError, LlnbenchError
from llnbench.runs import release_run_dirs
from llnbench.stopping import Terminated, sigterm_raises

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    help="Pretrain, fine-tune and benchmark RoBERTa models with efficient attention "
    "(LLN, LARA, softmax and linear baselines). Extra arguments are Hydra overrides, "
    "e.g. `attention=lln trainer.max_steps=200`.",
)

# job -> (module, config dataclass). Modules are imported only when their command runs.
JOBS: dict[str, tuple[str, str]] = {
    "scale": ("llnbench.jobs.scale", "ScaleConfig"),
    "analyze": ("llnbench.jobs.analyze", "AnalyzeConfig"),
    "pretrain": ("llnbench.jobs.pretrain", "PretrainConfig"),
    "report": ("llnbench.jobs.report", "ReportConfig"),
    "glue": ("llnbench.jobs.glue", "GlueConfig"),
    "lra": ("llnbench.jobs.lra", "LraConfig"),
}
EXTRA_ARGS = {"allow_extra_args": True, "ignore_unknown_options": True}


class JobCommand(typer.core.TyperCommand):
    """A job's command whose help ends with its config groups, main keys, an example and the
    override rule, read from conf/ (command_help.py) only when ``--help`` shows it."""

    @property
    def epilog(self) -> str:
        from llnbench.command_help import job_help

        try:
            return escape(job_help(self.name))
        except Exception as err:  # a damaged conf/ must not break --help itself
            return escape(f"(the config summary could not be read from conf/: {err})")

    @epilog.setter
    def epilog(self, value: str | None) -> None:  # click sets it in __init__; conf/ decides
        pass


# flags take no value; metavar="" keeps the help from showing one (Typer would print <bool>)
PrintConfig = Annotated[
    bool, typer.Option("--print-config", metavar="", help="Print the composed config and exit.")
]
Multirun = Annotated[
    bool,
    typer.Option(
        "--multirun", "-m", metavar="", help="Run every combination of comma sweeps, one by one."
    ),
]


def launch(job: str, overrides: list[str], print_config: bool = False, multirun: bool = False):
    """Compose, convert and run ``job`` once per sweep combination."""
    from llnbench.config import compose, from_dict, sweep_overrides, to_container, to_yaml

    if job not in JOBS:
        raise ConfigError(f"`llnbench {job}` is not built yet in this version")
    dashed = [o for o in overrides if o.startswith("-")]
    if dashed:  # extra arguments pass through as overrides, so Typer never saw this option
        raise ConfigError(
            f"unknown option {dashed[0]!r} for `llnbench {job}` (see `llnbench {job} --help`); "
            "config overrides are written key=value"
        )
    bare = [o for o in overrides if o.lower() in ("true", "false")]
    if bare:  # `--causal true`: the flag took no value, so the value arrived as an override
        raise ConfigError(
            f"{bare[0]!r} is not an override (key=value); flags take no value: write "
            "--causal or --no-causal, --compile, --print-config"
        )
    combos = sweep_overrides(overrides)
    if len(combos) > 1 and not multirun:
        sweeps = [o for o in overrides if "," in o.split("=", 1)[-1]]
        raise ConfigError(
            f"{' '.join(sweeps)} is a sweep of {len(combos)} runs; add --multirun to run each "
            "combination, or give one value"
        )
    module_name, config_name = JOBS[job]
    module = importlib.import_module(module_name)
    config_cls = getattr(module, config_name)
    swept = [j for j in range(len(combos[0])) if len({c[j] for c in combos}) > 1]
    for i, combo in enumerate(combos):
        cfg = compose(job, combo)
        if len(combos) > 1 and cfg.get("run_dir"):  # one sub-folder per combination
            slug = "_".join(combo[j].lstrip("+~").replace("=", "-") for j in swept)
            slug = "".join(c if c.isalnum() or c in "._-" else "-" for c in slug)
            cfg = compose(job, [*combo, f"run_dir={_value(f'{cfg.run_dir}/{slug}')}"])
        if print_config:
            if hasattr(config_cls, "resolved"):  # the values the job derives, as they will run
                import yaml

                from llnbench.runs import as_plain

                resolved = from_dict(config_cls, to_container(cfg)).resolved()
                sys.stdout.write(yaml.safe_dump(as_plain(resolved), sort_keys=False))
            else:
                sys.stdout.write(to_yaml(cfg))
            continue
        if len(combos) > 1:
            err_console.rule(escape(f"run {i + 1}/{len(combos)}: {' '.join(combo)}"))
        try:
            module.run(from_dict(config_cls, to_container(cfg)))
        finally:
            release_run_dirs()  # the run directory's lock: held until the job ends


def user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn LlnbenchError into one line + exit 2, SIGTERM into one line + exit 143, Ctrl-C into
    exit 130, all without traceback. User text is printed as typed (no rich markup)."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            with sigterm_raises():
                return fn(*args, **kwargs)
        except LlnbenchError as err:
            say_error("llnbench: error:", str(err))
            raise typer.Exit(2) from None
        except OSError as err:  # a write outside llnbench.files (a library's): still one line
            if not files.is_path_problem(err):
                raise
            say_error("llnbench: error:", files.describe_os_error(err, verb="use"))
            raise typer.Exit(2) from None
        except Terminated as err:
            message = str(err)
            if message == "stopped by SIGTERM":  # outside a training loop
                message += " (every file written so far is intact; rerun to continue)"
            if os.environ.get("RANK", "0") == "0":  # under torchrun every rank stops; one says so
                say_error("llnbench:", message)
            raise typer.Exit(Terminated.exit_code) from None
        except KeyboardInterrupt:
            err_console.print("llnbench: interrupted (the last checkpoint, if any, is intact)")
            raise typer.Exit(130) from None

    return wrapper


def say_error(prefix: str, message: str) -> None:
    """``prefix`` in bold red, then ``message`` exactly as it is: brackets in paths and values
    (``run_dir=/tmp/[x]``) are text, not rich markup."""
    err_console.print(
        Text.assemble((prefix, "bold red"), " ", message), highlight=False, soft_wrap=True
    )


def _value(value: Any) -> str:
    """A Typer option value as a Hydra override value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ",".join(_value(v) for v in value) + "]"
    text = str(value)
    if any(c in text for c in " ,:[]{}()='\"\\$*?") or text == "":
        return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return text


def options_to_overrides(**options: Any) -> list[str]:
    return [f"{key}={_value(value)}" for key, value in options.items() if value is not None]


@app.command(context_settings=EXTRA_ARGS, cls=JobCommand)
@user_errors
def scale(
    ctx: typer.Context,
    max_len: Annotated[int | None, typer.Option("--max-len", help="Longest N (doubling).")] = None,
    min_len: Annotated[int | None, typer.Option("--min-len", help="Shortest N.")] = None,
    attention: Annotated[
        str | None, typer.Option("--attention", help="Comma list of mechanisms, or `all`.")
    ] = None,
    mode: Annotated[str | None, typer.Option("--mode", help="fwd | fwdbwd | both")] = None,
    causal: Annotated[
        bool | None,
        typer.Option(
            "--causal/--no-causal", metavar="", help="Causal attention (a flag: no value; off)."
        ),
    ] = None,
    device: Annotated[str | None, typer.Option("--device", help="auto | cpu | cuda")] = None,
    dtype: Annotated[str | None, typer.Option("--dtype", help="auto | fp32 | bf16 | fp16")] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", help="B.")] = None,
    scope: Annotated[
        str | None, typer.Option("--scope", help="layer (one attention) | model (train step)")
    ] = None,
    out: Annotated[str | None, typer.Option("--out", help="Output directory.")] = None,
    heads: Annotated[int | None, typer.Option("--heads", help="H (default 12).")] = None,
    head_dim: Annotated[int | None, typer.Option("--head-dim", help="d (default 64).")] = None,
    budget_s: Annotated[
        float | None, typer.Option("--budget-s", help="Skip longer N after a cell this slow.")
    ] = None,
    sdpa_backend: Annotated[
        str | None,
        typer.Option(
            "--sdpa-backend",
            help="auto (softmax on each SDPA backend, the fastest is the baseline) | default | "
            "cudnn | flash | efficient | math",
        ),
    ] = None,
    backend: Annotated[
        str | None,
        typer.Option("--backend", help="LLN backends, one series each: auto,torch,triton,fla."),
    ] = None,
    compile: Annotated[
        bool,
        typer.Option("--compile", metavar="", help="torch.compile each timed layer or model."),
    ] = False,
    print_config: PrintConfig = False,
) -> None:
    """Time and peak memory of attention vs sequence length -> scale.json, scale.csv, scale.png."""
    attentions = [a.strip() for a in attention.split(",") if a.strip()] if attention else None
    overrides = options_to_overrides(
        max_len=max_len, min_len=min_len, attentions=attentions, mode=mode,
        causal=causal, device=device, dtype=dtype, batch_size=batch_size, scope=scope,
        run_dir=out, heads=heads, head_dim=head_dim, budget_s=budget_s, sdpa_backend=sdpa_backend,
        backends=[b.strip() for b in backend.split(",") if b.strip()] if backend else None,
        compile=compile or None,
    )  # fmt: skip
    launch("scale", overrides + list(ctx.args), print_config)


def _job_command(job: str, summary: str) -> None:
    @app.command(name=job, context_settings=EXTRA_ARGS, help=summary, cls=JobCommand)
    @user_errors
    def command(
        ctx: typer.Context, print_config: PrintConfig = False, multirun: Multirun = False
    ) -> None:
        launch(job, list(ctx.args), print_config, multirun)


_job_command("pretrain", "Pretrain a RoBERTa MLM with a chosen attention (e.g. attention=lln).")
_job_command("glue", "Fine-tune a pretrained model on a GLUE task (e.g. task=sst2).")
_job_command("analyze", "Concentration instruments: entropy, spectral gap, log-normality.")
_job_command("lra", "Long Range Arena from scratch: task=listops|pathfinder32|pathfinder64|text.")


@app.command(context_settings=EXTRA_ARGS, cls=JobCommand)
@user_errors
def report(ctx: typer.Context, print_config: PrintConfig = False) -> None:
    """Collect run directories into one Markdown report with plots: `llnbench report runs/`.

    Arguments without `=` are input directories; the others are overrides (run_dir=..., title=...).
    """
    paths = [arg for arg in ctx.args if "=" not in arg]
    overrides = [arg for arg in ctx.args if "=" in arg]
    if paths:
        overrides.append(f"inputs={_value(paths)}")
    launch("report", overrides, print_config)


@app.command(name="export")
@user_errors
def export(
    run_dir: Annotated[str, typer.Argument(help="A pretraining run directory (or checkpoint).")],
    out: Annotated[str, typer.Argument(help="The folder to write (new or empty).")],
    format: Annotated[
        str, typer.Option("--format", help="hf: a transformers save_pretrained folder.")
    ] = "hf",
) -> None:
    """Export a pretraining run: `llnbench export RUN_DIR --format hf OUT` (safetensors).

    Softmax attention gives a plain RobertaForMaskedLM with llnbench's logits; other mechanisms
    are recorded in config.json and load back with `pretrained=hf:OUT`.
    """
    from llnbench.jobs.export import ExportConfig
    from llnbench.jobs.export import run as run_export

    run_export(ExportConfig(run_dir=run_dir, out=out, format=format))


def main() -> None:
    """The console script: ``app()``, except that a usage error (a bad ``--option`` value, an
    unknown command or option) is one line on stderr and exit 2, like every other bad input."""
    # click's classes, from wherever this Typer takes click (recent versions vendor it)
    click_errors = {cls.__name__: cls for cls in typer.BadParameter.__mro__}
    usage_error, click_exception = click_errors["UsageError"], click_errors["ClickException"]
    no_args = getattr(sys.modules[usage_error.__module__], "NoArgsIsHelpError", ())
    try:
        code = app(standalone_mode=False)
    except no_args:
        app()  # plain `llnbench`: the help, as usual
    except usage_error as err:
        ctx = getattr(err, "ctx", None)
        hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
        say_error("llnbench: error:", err.format_message() + hint)
        sys.exit(2)
    except click_exception as err:
        say_error("llnbench: error:", err.format_message())
        sys.exit(err.exit_code)
    except typer.Abort:
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
