"""The typer application object; command modules register on it. No logic lives in the CLI."""

import typer

app = typer.Typer(
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
