"""The headless core: data, forget sets, models, checkpoints, methods, metrics and runs.

Nothing under this package may import textual (tests/test_boundary.py enforces it).
"""


class UserError(Exception):
    """Bad input from the user: shown as one line (problem and fix), never as a traceback."""
