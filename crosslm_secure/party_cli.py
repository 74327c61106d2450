"""``crosslm sites ...``: make a simulated pilot's party folders, and check a party's own folder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from crosslm_secure.clitools import console, fail
from crosslm_secure.errors import CrossLMError

sites_app = typer.Typer(
    help="Party folders: one per party (server/, client-1/, ...), the layout `run --sites` and `deploy --sites` read.",
    no_args_is_help=True,
)


@sites_app.command("split")
def split(
    config: Annotated[
        Path, typer.Argument(help="The job YAML whose data file is split, e.g. experiments/configs/quick.yaml")
    ],
    out: Annotated[Path, typer.Option("--out", help="New folder for the party folders.")],
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a field: section.field=value")] = None,
) -> None:
    """Simulate a pilot: split the job's data into site folders, each with its own keys, and enrol them."""
    from crosslm_secure.config import load_config
    from crosslm_secure.simulate import split_into_sites

    try:
        made = split_into_sites(load_config(config, set_ or []), out)
    except CrossLMError as exc:
        fail(exc)
    for name, fingerprint in made.fingerprints.items():
        console.print(f"{name:<12} {made.records[name]:>6} records  {fingerprint}")
    console.print(f"wrote {made.root}: a simulation (one data file split into sites); a pilot's parties make their own")
    console.print(f"next: crosslm run {config} --sites {made.root}")


@sites_app.command("check")
def check(
    config: Annotated[Path, typer.Argument(help="The job YAML every party agreed on.")],
    parties: Annotated[list[Path], typer.Argument(help="Party folders to check, e.g. sites/client-1 (your own).")],
) -> None:
    """Check party folders against the job: keys, registry, and (a site's) records' columns and labels."""
    from crosslm_secure.config import load_config
    from crosslm_secure.parties import SERVER, PartyFolder
    from crosslm_secure.party_run import open_coordinator, open_site

    try:
        job = load_config(config)
        for path in parties:
            folder = PartyFolder(path)
            if folder.name == SERVER:
                side = open_coordinator(folder, job)
                console.print(
                    f"{folder.name}: keys, registry ({len(side.registry)} parties), "
                    f"{len(side.llm_test)} evaluator records"
                )
            else:
                site = open_site(folder, job)
                console.print(
                    f"{folder.name}: keys, registry, {len(site.data.train)} train / {len(site.data.test)} test records"
                )
    except CrossLMError as exc:
        fail(exc)
