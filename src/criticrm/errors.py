"""User-facing errors: the CLI prints their message (no traceback) and exits with status 2."""


class CriticRMError(Exception):
    """Base for errors caused by input or configuration, with a message that says how to fix it."""


class ConfigError(CriticRMError):
    """An option or config-file value is missing, unknown or of the wrong type."""
