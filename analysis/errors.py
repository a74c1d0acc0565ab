"""Errors that carry one clear message for the user (exit code 2); anything else is a bug (1)."""


class UserError(Exception):
    """Bad input: the message says what is wrong and how to fix it. The CLI exits with 2."""


class ConfigError(UserError):
    """A config key (or CLI flag) has a value that is not allowed; the message names the key."""


class ModelUnavailableError(UserError):
    """The model cannot be loaded (missing folder, offline with no cached weights, ...)."""
