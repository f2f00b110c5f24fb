"""Errors that mean "the input is wrong, here is the fix", reported as one paragraph."""


class OEUserError(ValueError):
    """Bad user input (config value, path, checkpoint); the message names the value and the fix."""


class NonFiniteLossError(OEUserError):
    """The training loss became NaN or infinite."""
