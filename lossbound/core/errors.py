"""Exceptions that the entry point turns into a one-line message and a non-zero exit."""


class InputError(Exception):
    """Bad user input: a missing/unreadable file, a wrong key, an invalid value.

    The message must be one line naming the file, key or value and what was expected.
    """


class ConfigError(InputError):
    """A configuration value is invalid (unknown registry name, bad tolerance, ...)."""


class NotApplicable(Exception):
    """A feature does not apply to this dataset (e.g. no counting-noise model for non-count
    data); the message says why, and the study records it instead of failing."""
