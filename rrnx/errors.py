"""Errors meant for people: the CLI prints their message on one line and exits non-zero."""


class RrnxError(Exception):
    """A user's mistake (bad file, bad recipe, empty split...). Printed without traceback."""


class DataError(RrnxError):
    """A ratings file that cannot be read as declared; the message names file, line and what was expected."""


class RecipeError(RrnxError):
    """A recipe or command-line override that names an unknown key or model, or a bad value."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, with a message saying where the work stands and how to continue it (exit 130)."""
