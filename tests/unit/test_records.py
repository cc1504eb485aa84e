"""The domain records (:mod:`inferq.core.records`): equal, hashable and copied as frozen
dataclasses are; the JSON the store writes, a submit's answer and the text log's lines:
unchanged by the cheaper ways of making them."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import sys
from typing import Any

import pytest
from starlette.responses import JSONResponse

from inferq.api.body import JsonAnswer
from inferq.cli.logs import TEXT_FORMAT, TextFormatter
from inferq.core.models import FileRecord
from inferq.core.records import Copier, copied, record
from inferq.core.states import JobState
from inferq.core.structured import ToolChoice
from inferq.core.work import ChatMessage, ChatRequest, Usage
from inferq.store.rows import dumps
from tests.contract.test_store_contract import make_batch, make_job

JOB = make_job()
REQUEST = JOB.request
BATCH = make_batch("b1")
FILE = FileRecord(
    id="f1", tenant="t", kind="file", purpose="batch", filename="in.jsonl", bytes=3,
    created_at=1.0,
)  # fmt: skip


@pytest.mark.parametrize("value", [JOB, BATCH, FILE], ids=["job", "batch", "file"])
def test_a_copy_is_what_replace_makes_and_the_original_stays(value: Any) -> None:
    before = dataclasses.astuple(value)
    changes = {"seq": 7, "state": JobState.RUNNING} if value is not FILE else {"seq": 7}
    copy = value.evolve(**changes)
    assert copy == dataclasses.replace(value, **changes)
    assert type(copy) is type(value) and copy is not value
    assert dataclasses.astuple(value) == before
    assert copy.seq == 7
    assert value.evolve() == value


def test_a_copy_refuses_a_name_that_is_not_a_field() -> None:
    with pytest.raises(TypeError, match="no field 'sequence'"):
        JOB.evolve(sequence=1)
    with pytest.raises(TypeError, match="no field"):
        copied(REQUEST, {"max_token": 1})


def test_a_copy_keeps_fields_named_as_the_copy_functions_own_names() -> None:
    @record
    class Named:
        record: int
        cls: int = 2
        new: int = 3
        made: str = "m"
        KEPT: str = "k"

    value = Named(1)
    assert copied(value, {}) == value
    assert copied(value, {"cls": 9, "KEPT": "x"}) == Named(1, 9, 3, "m", "x")
    assert copied(value, {"record": 5, "new": 0, "made": ""}) == Named(5, 2, 0, "", "k")
    with pytest.raises(TypeError, match="no field '__record'"):
        copied(value, {"__record": 1})


def test_a_record_that_must_run_its_init_is_not_copied_around_it() -> None:
    @record
    class Checked:
        value: int

        def __post_init__(self) -> None:
            if self.value < 0:
                raise ValueError("negative")

    with pytest.raises(TypeError, match="use replace"):
        Copier(Checked)


def test_records_are_equal_and_hashed_by_their_fields() -> None:
    request = ChatRequest(messages=(ChatMessage("user", "hi"),), max_tokens=8, stop=("x",))
    same = ChatRequest(messages=(ChatMessage("user", "hi"),), max_tokens=8, stop=("x",))
    assert same == request and hash(same) == hash(request)
    assert ToolChoice("auto") == ToolChoice("auto")
    assert len({Usage(1, 2), Usage(1, 2), Usage(2, 1)}) == 2
    assert dataclasses.replace(request, max_tokens=9) != request
    with pytest.raises(TypeError):  # a field holds a dict, as with a frozen dataclass
        hash(JOB)


VALUES = [
    {},
    {"a": 1.5, "b": [1, "xé中\u2028", None, True, -0.0, 1e300], "c": {"d": [[[]]]}},
    'a "quoted"\nline\\',
    3,
    None,
    [],
    {"1": 2, "inf": math.inf, "nan": math.nan},
    {"role": "user", "content": "\ud800 lone surrogate"},
]


@pytest.mark.parametrize("value", VALUES)
def test_stored_json_is_what_the_standard_encoder_writes(value: Any) -> None:
    expected = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    assert dumps(value) == expected
    assert dumps(REQUEST.to_dict()) == json.dumps(
        REQUEST.to_dict(), separators=(",", ":"), ensure_ascii=False
    )


def test_stored_json_refuses_what_it_cannot_write() -> None:
    with pytest.raises(TypeError, match="not JSON serializable"):
        dumps({"x": object()})


@pytest.mark.parametrize(
    "created", [1_733_000_000.123456, 1_000_000_000.9994, 1_000_000_001.0005, 0.5, 86_399.999]
)
def test_text_log_lines_are_the_standard_formatters(created: float) -> None:
    ours, standard = TextFormatter(), logging.Formatter(TEXT_FORMAT)
    for second_record in (False, True):  # the second record comes from the remembered second
        entry = logging.LogRecord("inferq.jobs", logging.INFO, "", 0, "job %s queued", ("j",), None)
        entry.created = created + (0.25 if second_record else 0.0)
        entry.msecs = math.floor((entry.created - int(entry.created)) * 1000)
        assert ours.format(entry) == standard.format(entry)
        assert entry.message == "job j queued"  # set on the record, as the standard one does


def test_text_log_lines_with_an_exception_or_a_stack_are_the_standard_formatters() -> None:
    try:
        raise ValueError("bad\nline")
    except ValueError:
        exc_info = sys.exc_info()
    for args in (("%d%%", (5,)), ("multi\nline %r", ({"k": "é"},))):
        for extra in ({"exc_info": exc_info}, {"sinfo": "Stack (most recent call last):\n  x"}, {}):
            pair = []
            for formatter in (TextFormatter(), logging.Formatter(TEXT_FORMAT)):
                entry = logging.LogRecord(
                    "inferq.worker", logging.ERROR, "", 0, args[0], args[1],
                    extra.get("exc_info"), sinfo=extra.get("sinfo"),
                )  # fmt: skip
                entry.created, entry.msecs = 1_733_000_000.5, 500.0
                pair.append(formatter.format(entry))
            assert pair[0] == pair[1]


@pytest.mark.parametrize("content", [{"requestId": "01a2"}, {"x": "é\u2028", "n": [1, 2.5, None]}])
def test_a_submits_answer_is_starlettes_json_answer(content: Any) -> None:
    ours, standard = JsonAnswer(content), JSONResponse(content)
    assert ours.body == standard.body
    assert ours.raw_headers == standard.raw_headers
    with pytest.raises(ValueError, match="Out of range float"):
        JsonAnswer({"x": math.nan})
