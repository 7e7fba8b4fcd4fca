"""User-facing errors: the CLI prints their message as one line and exits 2, without a traceback."""


class LlnbenchError(Exception):
    """A problem with the user's input (config, data, checkpoint), explained in one line."""


class ConfigError(LlnbenchError):
    """A config value or override that is invalid; the message names the value and what is allowed."""


class DataError(LlnbenchError):
    """A dataset that is missing, unreachable or malformed."""


class CheckpointError(LlnbenchError):
    """A checkpoint that cannot be loaded or does not match the requested config."""


def one_of(what: str, value: object, allowed: "list[str] | tuple[str, ...]") -> ConfigError:
    """The standard "unknown X 'v'; allowed: a, b, c" error."""
    return ConfigError(f"unknown {what} {value!r}; allowed: {', '.join(map(str, allowed))}")
