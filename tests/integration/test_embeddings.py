"""OpenAI's embeddings API through the official ``openai`` SDK, on the real model."""

from __future__ import annotations

import base64
import math
import struct

import openai
import pytest

pytestmark = pytest.mark.integration

EMBED_MODEL = "smollm2-135m-embed"
CHAT_MODEL = "smollm2-135m-instruct"
TEXTS = ["The cat sat on the mat.", "A kitten rested on the rug.", "Interest rates rose again."]


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def test_embeddings_as_floats(oai: openai.OpenAI) -> None:
    response = oai.embeddings.create(model=EMBED_MODEL, input=TEXTS, encoding_format="float")

    assert response.object == "list"
    assert response.model == EMBED_MODEL
    assert [d.index for d in response.data] == [0, 1, 2]
    vectors = [d.embedding for d in response.data]
    size = len(vectors[0])
    assert size > 100 and all(len(v) == size for v in vectors)
    for vector in vectors:
        assert math.sqrt(sum(x * x for x in vector)) == pytest.approx(1.0, abs=1e-5)
    # similar sentences are closer than unrelated ones
    assert cosine(vectors[0], vectors[1]) > cosine(vectors[0], vectors[2])
    assert response.usage.prompt_tokens > len(TEXTS)
    assert response.usage.total_tokens == response.usage.prompt_tokens


def test_base64_is_what_the_sdk_asks_for_by_default(oai: openai.OpenAI) -> None:
    floats = oai.embeddings.create(model=EMBED_MODEL, input=TEXTS[0], encoding_format="float")
    # Without encoding_format the SDK asks for base64 and decodes it to floats itself.
    decoded = oai.embeddings.create(model=EMBED_MODEL, input=TEXTS[0])
    assert decoded.data[0].embedding == pytest.approx(floats.data[0].embedding, abs=1e-6)
    raw = oai.embeddings.create(model=EMBED_MODEL, input=[TEXTS[0]], encoding_format="base64")
    encoded = raw.data[0].embedding
    assert isinstance(encoded, str)
    values = struct.unpack(f"<{len(floats.data[0].embedding)}f", base64.b64decode(encoded))
    assert list(values) == pytest.approx(floats.data[0].embedding, abs=1e-6)
    assert raw.usage.prompt_tokens == floats.usage.prompt_tokens


def test_models_lists_both_models(oai: openai.OpenAI) -> None:
    ids = {model.id for model in oai.models.list()}
    assert {CHAT_MODEL, EMBED_MODEL} <= ids


@pytest.mark.parametrize(
    ("kwargs", "param", "status"),
    [
        ({"model": EMBED_MODEL, "input": []}, "input", 400),
        ({"model": EMBED_MODEL, "input": ["fine", ""]}, "input.1", 400),
        ({"model": EMBED_MODEL, "input": [[1, 2, 3]]}, "input.0", 400),
        ({"model": CHAT_MODEL, "input": "hi"}, "model", 400),
        ({"model": EMBED_MODEL, "input": "hi", "dimensions": 7}, "dimensions", 400),
        ({"model": EMBED_MODEL, "input": "word " * 600}, "input", 400),
        ({"model": "no-such-model", "input": "hi"}, "model", 404),
    ],
)
def test_bad_input_is_refused_in_openai_shape(
    oai: openai.OpenAI, kwargs: dict[str, object], param: str, status: int
) -> None:
    with pytest.raises(openai.APIStatusError) as info:
        oai.embeddings.create(encoding_format="float", **kwargs)  # type: ignore[call-overload]
    error = info.value
    assert error.status_code == status
    body = error.body
    assert isinstance(body, dict)
    assert body["param"] == param
    assert body["type"] == "invalid_request_error"
    assert body["message"]


def test_server_still_answers_after_bad_input(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError):
        oai.embeddings.create(model=EMBED_MODEL, input=[])
    response = oai.embeddings.create(model=EMBED_MODEL, input="still here")
    assert len(response.data) == 1
