"""The one kind of error a user can cause, and how it reaches them.

Anything the user can fix (a config key, a data path, a missing model) raises `UserError`; the CLI
prints its message as a single line and exits with status 2, without a traceback. Everything else is a
bug and keeps its traceback.
"""


class UserError(Exception):
    """A mistake the user can fix. The message is one line: what is wrong, where, and what to do."""

    exit_code = 2


class Interrupted(UserError):
    """The user stopped the run (Ctrl-C); the message says what was saved and how to resume."""

    exit_code = 130  # the shell's convention for a run ended by SIGINT
