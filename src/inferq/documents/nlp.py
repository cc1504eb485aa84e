"""The language pipeline behind unstructured's text classifiers, built without a download.

unstructured decides whether a line of text is a Title or NarrativeText with a few
heuristics that tokenize it, split it into sentences and look for a verb. It runs them on
a spaCy pipeline which, when the ``en_core_web_sm`` model is not installed, it downloads
and installs into site-packages at run time. inferq never lets that happen: before the
first partition it replaces unstructured's loader with :func:`load_pipeline`, which

- loads ``en_core_web_sm`` when it is installed locally (the classifiers then behave
  exactly as upstream), and otherwise
- builds a pipeline from parts that ship inside spaCy itself: the English tokenizer,
  the rule-based ``sentencizer``, and :func:`tag_verbs`, a small rule-based tagger that
  marks the words that are verbs with Penn Treebank verb tags (all the classifiers read).

Neither path touches the network or the disk outside site-packages.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any, Final

MODEL_NAME: Final = "en_core_web_sm"
# the components of the model that unstructured does not use (as unstructured excludes them)
_MODEL_EXCLUDE: Final = ["ner", "lemmatizer", "attribute_ruler"]
TAGGER_NAME: Final = "inferq_verb_tagger"


def _words(text: str) -> list[str]:
    return text.split()


# forms of be/have/do, with their Penn Treebank tags
_AUXILIARIES: Final[dict[str, str]] = {
    "be": "VB",
    "am": "VBP",
    "are": "VBP",
    "'re": "VBP",
    "'m": "VBP",
    "is": "VBZ",
    "was": "VBD",
    "were": "VBD",
    "been": "VBN",
    "being": "VBG",
    "have": "VBP",
    "'ve": "VBP",
    "has": "VBZ",
    "had": "VBD",
    "having": "VBG",
    "do": "VBP",
    "does": "VBZ",
    "did": "VBD",
    "done": "VBN",
}
_MODALS: Final = frozenset(
    {"can", "ca", "could", "will", "wo", "would", "shall", "should", "may", "might", "must", "'ll"}
)
# after these a content word is a verb: "we deploy", "to deploy", "please deploy"
_SUBJECTS: Final = frozenset({"i", "you", "he", "she", "it", "we", "they"})
_VERB_TRIGGERS: Final = frozenset({"to", "please", "not", "n't", "never", "also"})
# words that follow a trigger without being verbs
_NOT_VERBS: Final = frozenset(
    _words(
        """
    a an the this that these those my your his her its our their all any some no every each
    and or but of in on at by for with from into about as than then so too very just only
    also not n't never always often there here me him us them what which who whom whose when
    where why how one two three more most less much many few own same other such
    """
    )
)
# irregular past forms that are (almost) never nouns
_IRREGULAR_PAST: Final = frozenset(
    _words(
        """
    became began bent bit bled blew bore bought brought built burnt caught chose clung came
    crept dealt dove drew dreamt drank drove ate fell fed felt fought found fled flew forbade
    forgot forgave froze got gave went grew hung heard hid held kept knelt knew laid led leapt
    learnt left lent lay lit lost made meant met paid proved quit ran rang rode rose said saw
    sought sold sent shook shone shot showed shrank sang sank sat slept slid spoke sped spent
    spun stood stole stuck stung struck strove swore swept swam swung took taught tore told
    thought threw understood woke wore wove wept won wound wrote
    """
    )
)
_PAST_PARTICIPLES: Final = frozenset(
    _words(
        """
    written taken given gone known shown seen spoken chosen broken driven eaten fallen
    forgotten frozen hidden ridden risen stolen sworn thrown woken worn begun drunk sung sunk
    swum
    """
    )
)
# frequent verbs that are rarely nouns: any inflection of one of them is a verb
_VERB_LEMMAS: Final = frozenset(
    _words(
        """
    accept achieve add allow appear apply argue arrive ask assume avoid become begin believe
    belong bring build buy carry catch choose claim come consider contain continue create
    decide deliver depend describe destroy determine develop discover discuss eat enable
    encourage ensure enter establish examine exist expect explain express fail feel find
    finish follow forget gain get give go grow happen hear hold identify imagine improve
    include indicate involve join keep know learn leave let listen live locate lose maintain
    make manage mean meet mention notice obtain occur perform prefer prepare prevent produce
    protect provide publish pull put reach realize receive recognize reduce refer reflect
    relate rely remain remember remove replace represent require resolve reveal say see seek
    run seem sell send serve sit speak spend stand stay suggest suppose take teach tell tend think
    throw try understand want win wonder worry write
    """
    )
)
_ED_NOT_VERBS: Final = frozenset(
    _words(
        """
    bed bled breed creed deed feed greed heed hundred kindred need red reed seed shed sled
    speed steed weed wed bread dread head lead read spread thread tread abroad naked wicked
    sacred rugged ragged beloved learned aged crooked dogged jagged wretched embed
    """
    )
)
_ING_NOT_VERBS: Final = frozenset(
    _words(
        """
    anything bring ceiling cling during evening everything king morning nothing ping ring
    sibling sing sling something spring sting string swing thing wing wring pudding
    """
    )
)
_WORD_RE: Final = re.compile(r"^[a-z][a-z'-]*$")


def _inflections(lemma: str) -> set[str]:
    forms = {lemma}
    if lemma.endswith("e"):
        forms |= {lemma + "s", lemma + "d", lemma[:-1] + "ing"}
    elif lemma.endswith("y") and lemma[-2:-1] not in set("aeiou"):
        forms |= {lemma[:-1] + "ies", lemma[:-1] + "ied", lemma + "ing"}
    elif lemma.endswith(("s", "sh", "ch", "x", "z", "o")):
        forms |= {lemma + "es", lemma + "ed", lemma + "ing"}
    else:
        forms |= {lemma + "s", lemma + "ed", lemma + "ing"}
    return forms


_VERB_FORMS: Final = frozenset(f for lemma in _VERB_LEMMAS for f in _inflections(lemma))


def _shape_tag(word: str) -> str:
    """The verb tag a verb form of this shape gets."""
    if word.endswith("ing"):
        return "VBG"
    if word in _PAST_PARTICIPLES:
        return "VBN"
    if word.endswith("ed") or word in _IRREGULAR_PAST:
        return "VBD"
    if word.endswith("s") and not word.endswith("ss"):
        return "VBZ"
    return "VBP"


def verb_tags(words: Iterable[str]) -> list[str]:
    """Penn Treebank tags for a sequence of tokens, as far as verbs go.

    Verbs get ``VB``/``VBD``/``VBG``/``VBN``/``VBP``/``VBZ`` (modals ``MD``); every other
    token gets ``NN`` (or ``.`` for punctuation): the classifiers only ask whether a
    piece of text contains a verb.
    """
    lowered = [w.lower() for w in words]
    tags: list[str] = []
    for i, word in enumerate(lowered):
        previous = lowered[i - 1] if i > 0 else ""
        tag = "NN" if any(c.isalnum() for c in word) else "."
        if word in _AUXILIARIES:
            tag = _AUXILIARIES[word]
        elif word in _MODALS:
            tag = "MD"
        elif not _WORD_RE.match(word):
            pass
        elif word in _VERB_FORMS or word in _IRREGULAR_PAST or word in _PAST_PARTICIPLES:
            tag = _shape_tag(word)
        elif word.endswith("ed") and len(word) >= 5 and word not in _ED_NOT_VERBS:
            tag = "VBD"
        elif word.endswith("ing") and len(word) >= 6 and word not in _ING_NOT_VERBS:
            tag = "VBG"
        elif word not in _NOT_VERBS and (
            previous in _SUBJECTS or previous in _MODALS or previous in _VERB_TRIGGERS
        ):
            tag = _shape_tag(word) if previous in _SUBJECTS else "VB"
        if tag == "VBP" and (previous in _MODALS or previous == "to"):
            tag = "VB"  # the bare infinitive: "can run", "to run"
        tags.append(tag)
    return tags


def tag_verbs(doc: Any) -> Any:
    """spaCy component: set ``token.tag_`` from :func:`verb_tags`."""
    for token, tag in zip(doc, verb_tags(t.text for t in doc), strict=True):
        token.tag_ = tag
    return doc


def model_installed() -> bool:
    """Whether the ``en_core_web_sm`` model is installed locally (never downloads)."""
    import spacy.util

    return bool(spacy.util.is_package(MODEL_NAME))


def rule_pipeline() -> Any:
    """English tokenizer + sentencizer + :func:`tag_verbs`: no model, no data files."""
    import spacy
    from spacy.language import Language

    if not Language.has_factory(TAGGER_NAME):
        Language.component(TAGGER_NAME, func=tag_verbs)
    nlp = spacy.blank("en")
    nlp.add_pipe("sentencizer")
    nlp.add_pipe(TAGGER_NAME)
    return nlp


def load_pipeline() -> Any:
    """The pipeline unstructured's classifiers run on; see the module docstring."""
    if model_installed():
        import spacy

        return spacy.load(MODEL_NAME, exclude=_MODEL_EXCLUDE)
    return rule_pipeline()
