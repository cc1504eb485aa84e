"""``inferq blobs``: the blob store (files, datasets, outputs)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from inferq.blobs import BlobStore, create_blobs
from inferq.blobs.migrate import MigrateReport, migrate
from inferq.cli.common import database_command, out, run
from inferq.config import Settings

blobs_app = typer.Typer(help="The blob store: files, datasets and outputs.", no_args_is_help=True)

_URL_HELP = (
    "file:///PATH, postgresql://…, postgres (the job store's database) or s3://BUCKET/PREFIX"
)
From = Annotated[str, typer.Option("--from", help=f"The store to copy from: {_URL_HELP}.")]
To = Annotated[str, typer.Option("--to", help="The store to copy to (the same forms).")]
Prefix = Annotated[str, typer.Option(help="Only the blobs whose names start with this.")]


@database_command(blobs_app, "migrate")
def blobs_migrate(config: Settings, source: From, target: To, prefix: Prefix = "") -> None:
    """Copy every blob from one store to another, each verified by its SHA-256.

    Blobs the target already holds with the same bytes are skipped, so an interrupted
    migration resumes where it stopped when run again. The source is left as it is.
    """

    def opened(url: str) -> BlobStore:
        return create_blobs(url, database_url=config.database_url, default_dir=Path("."))

    async def main() -> MigrateReport:
        from_store, to_store = opened(source), opened(target)
        await from_store.open()
        try:
            await to_store.open()
            try:
                return await migrate(from_store, to_store, prefix=prefix, progress=_progress)
            finally:
                await to_store.close()
        finally:
            await from_store.close()

    report = run(main())
    out.print(
        f"copied {report.copied} blobs ({report.copied_bytes} bytes), "
        f"skipped {report.skipped} already there with the same bytes"
        + (f", {report.vanished} deleted meanwhile" if report.vanished else "")
    )


def _progress(key: str, copied: bool, size: int) -> None:
    out.print(f"{'copied' if copied else 'same  '} {key} ({size} bytes)", highlight=False)
