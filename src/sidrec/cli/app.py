"""The typer application object; command modules register on it. No logic lives in the CLI."""

import click
import typer
from typer.core import TyperGroup

from sidrec.errors import SidrecError, file_problem


class SidrecGroup(TyperGroup):
    """Runs a command and turns what a bad file raises (OSError, bad UTF-8, a parser's error) into a SidrecError, so
    the user sees one line instead of a traceback (or click's bare `Aborted.` for an EOFError); bugs propagate."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (SidrecError, click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except Exception as e:  # noqa: BLE001 - file_problem decides; the rest keeps its traceback
            msg = file_problem(e)
            if msg is None:
                raise
            raise SidrecError(msg) from e


app = typer.Typer(
    cls=SidrecGroup,
    name="sidrec",
    help="Generative recommendation with semantic IDs: data, SIDs, SFT, RL, evaluation, analysis.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
data_app = typer.Typer(help="Import, preprocess and export datasets.", no_args_is_help=True)
baseline_app = typer.Typer(help="Classical baselines evaluated with the sidrec harness.", no_args_is_help=True)
sid_app = typer.Typer(help="Build and inspect semantic IDs.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(baseline_app, name="baseline")
app.add_typer(sid_app, name="sid")
