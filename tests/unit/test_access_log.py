"""inferq's access-log formatter writes uvicorn's access lines, byte for byte."""

from __future__ import annotations

import logging
import logging.config

import pytest
from uvicorn.config import LOGGING_CONFIG
from uvicorn.logging import AccessFormatter as UvicornAccessFormatter

from inferq.api.access_log import AccessFormatter
from inferq.cli.serve import _text_log_config

FMT = LOGGING_CONFIG["formatters"]["access"]["fmt"]


@pytest.mark.parametrize("colors", [False, True])
@pytest.mark.parametrize("status", [200, 201, 404, 422, 503, 599])
@pytest.mark.parametrize("level", [logging.INFO, logging.WARNING])
def test_the_lines_are_uvicorns(colors: bool, status: int, level: int) -> None:
    record = logging.LogRecord(
        "uvicorn.access",
        level,
        "",
        0,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5555", "POST", "/v1/queue/submit?a=1", "1.1", status),
        None,
    )
    ours = AccessFormatter(FMT, use_colors=colors).format(record)
    assert ours == UvicornAccessFormatter(FMT, use_colors=colors).format(record)


def test_serve_configures_it_for_the_access_log_alone() -> None:
    config = _text_log_config(LOGGING_CONFIG)
    assert config["formatters"]["access"]["()"] == "inferq.api.access_log.AccessFormatter"
    assert config["formatters"]["default"] == LOGGING_CONFIG["formatters"]["default"]
    assert LOGGING_CONFIG["formatters"]["access"]["()"] == "uvicorn.logging.AccessFormatter"
    made = logging.config.DictConfigurator(config).configure_formatter(
        config["formatters"]["access"]
    )
    assert isinstance(made, AccessFormatter)
    assert made._fmt == FMT
