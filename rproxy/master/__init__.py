"""The master process: listeners, privileges, daemon, supervision of workers."""


class StartupError(Exception):
    """A start-up step failed; the message says what and how to fix it."""
