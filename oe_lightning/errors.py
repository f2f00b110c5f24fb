"""Errors that mean "the input is wrong, here is the fix", reported as one paragraph."""


class OEUserError(ValueError):
    """Bad user input (config value, path, checkpoint); the message names the value and the fix."""


class NonFiniteLossError(OEUserError):
    """The training loss became NaN or infinite."""


class Preempted(Exception):
    """Training stopped on a signal (SLURM preemption, ``scancel``) after writing a checkpoint."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code
