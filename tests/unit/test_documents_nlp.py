"""inferq.documents.nlp: the offline pipeline behind unstructured's text classifiers."""

from __future__ import annotations

import pytest

from inferq.documents import nlp, runtime

VERBS = {"VB", "VBD", "VBG", "VBN", "VBP", "VBZ"}


def has_verb(text: str) -> bool:
    return any(tag in VERBS for tag in nlp.verb_tags(text.split()))


@pytest.mark.parametrize(
    "text",
    [
        "The queue is full",
        "Workers claimed each task",
        "We deploy on Mondays",
        "Please review the summary",
        "It will finish soon",
        "The runner keeps going",
        "Each element carries its text",
        "The batch finished without errors",
        "The service runs every job",
        "Jobs wrote their results",
    ],
)
def test_sentences_have_a_verb(text: str) -> None:
    assert has_verb(text)


@pytest.mark.parametrize(
    "text",
    [
        "Quarterly Report",
        "Results and discussion",
        "Table of contents",
        "The second page",
        "A morning in the city",
        "Annual revenue by region",
        "One hundred red apples",
    ],
)
def test_headings_have_no_verb(text: str) -> None:
    assert not has_verb(text)


def test_modal_and_auxiliary_tags() -> None:
    assert nlp.verb_tags(["it", "can", "run"]) == ["NN", "MD", "VB"]
    assert nlp.verb_tags(["she", "has", "gone", "."]) == ["NN", "VBZ", "VBN", "."]


def test_rule_pipeline_gives_sentences_tokens_and_tags() -> None:
    pipeline = nlp.rule_pipeline()
    doc = pipeline("The queue is full. Workers wait for it!")
    assert [s.text for s in doc.sents] == ["The queue is full.", "Workers wait for it!"]
    assert [t.text for t in doc][:4] == ["The", "queue", "is", "full"]
    assert doc[2].tag_ == "VBZ"


def test_unstructured_classifiers_run_on_inferq_pipeline() -> None:
    runtime.prepare()
    from unstructured.nlp import tokenize
    from unstructured.partition.text_type import is_possible_narrative_text, is_possible_title

    assert tokenize.pos_tag("It works.")[1] == ("works", "VBZ")
    assert tokenize.sent_tokenize("One sentence here. And another one.") == [
        "One sentence here.",
        "And another one.",
    ]
    assert is_possible_narrative_text("The runner claims each task from the store.")
    assert not is_possible_narrative_text("Quarterly Report")
    assert is_possible_title("Quarterly Report")


def test_prepare_refuses_the_model_download() -> None:
    runtime.prepare()
    from unstructured.nlp import tokenize

    with pytest.raises(runtime.DownloadRefused, match="does not download"):
        tokenize._install_spacy_model()


def test_pipeline_name() -> None:
    expected = nlp.MODEL_NAME if nlp.model_installed() else "inferq-rules"
    assert runtime.pipeline_name() == expected
