"""The one prompt builder: every prompt vlmdet shows a model comes from here.

Train, eval, predict, ``doctor`` and any reward function call :func:`build_prompt`, so a model is
never trained on one wording and evaluated on another. A prompt depends on the task and on the
family's *prompt style* (its own convention, from the family registry):

========== ============================================================================
style      detect (closed set)                         ground a phrase
========== ============================================================================
chat_json  ``Locate every instance that belongs to the following categories: "a, b".
           Report bbox coordinates in JSON format.``  ``Locate "<phrase>" ... JSON format.``
qwen2_vl   ``Detect all objects of these categories: a, b.`` / ``Find <|object_ref_start|>...``
paligemma  ``detect a ; b``                             ``detect <phrase>``
florence2  ``<OD>``                                     ``<CAPTION_TO_PHRASE_GROUNDING><phrase>``
internvl   ``Please provide the bounding box coordinates of every object of these categories: a, b.``
           ``Please provide the bounding box coordinate of the region this sentence describes: <ref>phrase</ref>``
========== ============================================================================

The chat_json wording follows the Qwen2.5-VL grounding cookbook, so a real base model
understands it before any fine-tuning; the PaliGemma and Florence-2 forms are their task prefixes.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

from vlmdet.codecs.labels import clean_label

TaskKind = Literal["detect", "detect_named", "ground"]
PROMPT_STYLES = ("chat_json", "qwen2_vl", "paligemma", "florence2", "internvl")

# What separates or frames class names in each style's prompt: a class name holding one of these
# would be read as two classes (or end the list), so it is refused rather than silently split.
CLASS_SEPARATORS = {
    "chat_json": (",", '"'),
    "qwen2_vl": (",", "<|"),
    "paligemma": (";", "<"),
    "internvl": (",", "<"),
    "florence2": (" . ", "<"),
}


def check_class_names(classes: Sequence[str], style: str) -> None:
    """Every class name fits the ``style``'s class list: non-empty, one line, no separator.

    Raises ``ValueError`` naming the class, the character and why.
    """
    for name in classes:
        if not isinstance(name, str) or not name.strip() or name != name.strip():
            raise ValueError(f"class name {name!r} must be a non-empty string without surrounding spaces; rename it in the annotations")
        if "\n" in name or "\r" in name:
            raise ValueError(f"class name {name!r} spans several lines; rename it in the annotations")
        if name != clean_label(name):
            raise ValueError(f"class name {name!r} has a run of whitespace inside, which answers cannot carry back (the label policy "
                             f"makes it one space); rename it to {clean_label(name)!r} in the annotations")
        bad = next((sep for sep in CLASS_SEPARATORS.get(style, ()) if sep in name), None)
        if bad is not None:
            raise ValueError(
                f"class name {name!r} contains {bad!r}, which separates or quotes the class list in the {style} prompt: the model "
                f"would read it as another class. Rename the class in the annotations (e.g. {name.replace(bad, ' ').strip()!r})"
            )


@dataclass(frozen=True)
class Task:
    """What the model is asked to do for one image.

    Attributes:
        kind: ``detect`` (all classes of a closed set), ``detect_named`` (only the classes named in
            the prompt, open-vocabulary style) or ``ground`` (the box(es) of one referring phrase).
        classes: class names shown in the prompt (``detect``/``detect_named``), in a fixed order.
        phrase: the referring expression (``ground`` only).
    """

    kind: TaskKind = "detect"
    classes: tuple[str, ...] = field(default_factory=tuple)
    phrase: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("detect", "detect_named", "ground"):
            raise ValueError(f"unknown task kind {self.kind!r}; use detect, detect_named or ground")
        if self.kind == "ground" and not self.phrase:
            raise ValueError("a grounding task needs a non-empty phrase")
        if self.kind != "ground" and not self.classes:
            raise ValueError(f"a {self.kind} task needs at least one class name in the prompt")


def build_prompt(task: Task, style: str) -> str:
    """Return the user text for ``task`` in the family's prompt ``style`` (image placement is the chat template's)."""
    if style not in PROMPT_STYLES:
        raise ValueError(f"unknown prompt style {style!r}; known: {', '.join(PROMPT_STYLES)}")
    if task.kind == "ground":
        phrase = task.phrase or ""
        if style == "paligemma":
            return f"detect {phrase}"
        if style == "florence2":
            return f"<CAPTION_TO_PHRASE_GROUNDING>{phrase}"
        if style == "qwen2_vl":
            return f"Find <|object_ref_start|>{phrase}<|object_ref_end|>"
        if style == "internvl":  # InternVL's own grounding prompt (its RefCOCO evaluation)
            return f"Please provide the bounding box coordinate of the region this sentence describes: <ref>{phrase}</ref>"
        return f'Locate "{phrase}" in the image. Report bbox coordinates in JSON format.'
    check_class_names(task.classes, style)
    names = ", ".join(task.classes)
    if style == "paligemma":
        return "detect " + " ; ".join(task.classes)
    if style == "florence2":
        # <OD> is Florence-2's closed-set task and names no classes; named classes use its
        # open-vocabulary task, one phrase per prompt, so several names are joined as one phrase.
        return "<OD>" if task.kind == "detect" else f"<OPEN_VOCABULARY_DETECTION>{' . '.join(task.classes)}"
    if style == "qwen2_vl":
        return f"Detect all objects of these categories: {names}."
    if style == "internvl":
        return f"Please provide the bounding box coordinates of every object of these categories: {names}."
    return f'Locate every instance that belongs to the following categories: "{names}". Report bbox coordinates in JSON format.'


# The styles whose prompts train the tiny models' tokenizers. Fixed on purpose: adding a prompt
# style must not change every family's tiny tokenizer (and with it the tiny weights, every test's
# model and the measured demo); a family whose style is not listed still tokenizes its prompts,
# with the merges these give.
TOKENIZER_CORPUS_STYLES = ("chat_json", "qwen2_vl", "paligemma", "florence2")


def example_prompts(names: Sequence[str], rng: random.Random, n: int = 100) -> Iterator[str]:
    """Prompts over random class subsets, for tokenizer corpora (:data:`TOKENIZER_CORPUS_STYLES`)."""
    for _ in range(n):
        chosen = tuple(rng.sample(list(names), k=min(len(names), rng.randint(1, 4))))
        for style in TOKENIZER_CORPUS_STYLES:
            yield build_prompt(Task("detect", chosen), style)
            yield build_prompt(Task("ground", phrase=" ".join(chosen)), style)
