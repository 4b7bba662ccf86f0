"""User-facing errors: the CLI prints their message (no traceback) and exits with status 2."""


class CriticRMError(Exception):
    """Base for errors caused by input or configuration, with a message that says how to fix it."""


class ConfigError(CriticRMError, ValueError):
    """An option or config-file value is missing, unknown, out of range or of the wrong type.

    A ValueError too, as a bad argument to a config class is for Python callers."""
