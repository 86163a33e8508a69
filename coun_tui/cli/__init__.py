"""`coun-lab`: the app with no arguments, and headless commands for everything it does.

The commands are grouped by what they drive, one module each (models, runs, experiments, app, bench);
importing a group registers its commands on the one `app` of cli/base.py. No group imports torch at
the top, so `--help` and the checks of plain input answer before torch loads.
"""

from __future__ import annotations

import inspect
import sys

import typer
from typer import Abort

try:  # typer >= 0.25 carries its own copy of click
    from typer._click.exceptions import ClickException
except ImportError:  # pragma: no cover
    from click.exceptions import ClickException  # type: ignore[assignment]  # the same class, older typer

from coun_tui.cli import app as _app_commands  # noqa: F401  (registers tui, serve)
from coun_tui.cli import bench as _bench_commands  # noqa: F401
from coun_tui.cli import experiments as _experiment_commands  # noqa: F401
from coun_tui.cli import export as _export_command  # noqa: F401
from coun_tui.cli import figure as _figure_commands  # noqa: F401
from coun_tui.cli import oracle as _oracle_commands  # noqa: F401
from coun_tui.cli import tune as _tune_commands  # noqa: F401
from coun_tui.cli.base import INVOCATION, add_hparam_flags, app
from coun_tui.cli.models import train
from coun_tui.cli.runs import unlearn
from coun_tui.engine import UserError

# Commands whose hyperparameter flags come from the methods' declarations (until then, they have none).
for _command in (train, unlearn):
    _command.__signature__ = inspect.signature(_command).replace(parameters=[  # type: ignore[union-attr]
        p for p in inspect.signature(_command).parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD])
DECLARED_FLAGS = {"unlearn": lambda: add_hparam_flags(unlearn),
                  "train": lambda: add_hparam_flags(train, ("epochs", "lr", "batch_size", "momentum",
                                                            "weight_decay", "schedule", "min_lr"), "retrain")}


def main(argv: list[str] | None = None) -> None:
    """Every mistake is one `error:` line with exit 2: bad input, and usage errors too."""
    argv = list(sys.argv[1:] if argv is None else argv) or ["tui"]
    INVOCATION[:] = argv
    try:
        if argv[0] in DECLARED_FLAGS:
            DECLARED_FLAGS[argv[0]]()
        code = typer.main.get_command(app).main(args=argv, prog_name="coun-lab", standalone_mode=False)
    except UserError as exc:
        _error(str(exc))
    except ClickException as exc:
        where = getattr(exc, "ctx", None)
        hint = f" (see `{where.command_path} --help`)" if where is not None else " (see `coun-lab --help`)"
        _error(exc.format_message() + hint)
    except (KeyboardInterrupt, Abort):
        typer.secho("interrupted", err=True)
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)


def _error(message: str) -> None:
    typer.secho(f"error: {' '.join(message.split())}", fg="red", err=True)
    sys.exit(2)


__all__ = ["app", "main"]
