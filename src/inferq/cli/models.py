"""``inferq models``: the configured models."""

from __future__ import annotations

import json

from rich.table import Table

from inferq.cli.common import DataDir, ModelsFile, load_models, out, settings


def models_command(models: ModelsFile = None, data_dir: DataDir = None) -> None:
    """List the configured models."""
    specs = load_models(settings(models_file=models, data_dir=data_dir))
    table = Table("model", "engine", "context", "slots", "options")
    for spec in specs.values():
        table.add_row(
            spec.name,
            spec.engine,
            str(spec.context_length),
            str(spec.slots),
            json.dumps(spec.options) if spec.options else "",
        )
    out.print(table)
