"""``inferq worker``: load the models and run queued jobs, without HTTP."""

from __future__ import annotations

import asyncio
import signal

from inferq.cli.common import (
    DatabaseUrl,
    DataDir,
    LogFormat,
    LogLevel,
    ModelsFile,
    configure_logging,
    run,
    settings,
)


def worker(
    data_dir: DataDir = None,
    models: ModelsFile = None,
    database_url: DatabaseUrl = None,
    log_level: LogLevel = None,
    log_format: LogFormat = None,
) -> None:
    """Run only a worker: load the models and run queued jobs, no HTTP.

    Start any number of them on one PostgreSQL database (INFERQ_DATABASE_URL) next to
    `inferq serve --no-worker` API processes. Stops cleanly on SIGINT or SIGTERM,
    handing its running jobs back to the queue.
    """
    from inferq.api.dialects import DIALECTS
    from inferq.runtime import open_runtime

    config = settings(
        data_dir=data_dir,
        models_file=models,
        database_url=database_url,
        log_level=log_level,
        log_format=log_format,
        worker=True,
    )
    configure_logging(config)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        async with open_runtime(config, plugins=DIALECTS.plugins()):
            await stop.wait()

    run(main())
