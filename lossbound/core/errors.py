"""Exceptions that the entry point turns into a one-line message and a non-zero exit."""


class InputError(Exception):
    """Bad user input: a missing/unreadable file, a wrong key, an invalid value.

    The message must be one line naming the file, key or value and what was expected.
    """


class ConfigError(InputError):
    """A configuration value is invalid (unknown registry name, bad tolerance, ...)."""


class GateRefused(InputError):
    """A quality gate found that the raw data do not fit the declared setup (a flipped
    image, a beam centre or rotation centre off, angles in the wrong unit); the message
    names the setting to check and the likely fix."""


class NotApplicable(Exception):
    """A feature does not apply to this dataset (e.g. no counting-noise model for non-count
    data); the message says why, and the study records it instead of failing."""
