"""The headless core: data, forget sets, models, checkpoints, methods, metrics and runs.

Nothing under this package may import textual (tests/test_boundary.py enforces it).
"""


class UserError(Exception):
    """Bad input from the user: shown as one line (problem and fix), never as a traceback.

    The message is kept on one line whatever went into it (a library's multi-line text, a name
    with a line break)."""

    def __init__(self, message: object = "") -> None:
        super().__init__(" ".join(str(message).split()))
