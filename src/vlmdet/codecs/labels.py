"""The label policy: how a label a model wrote becomes one of the classes, the same for every codec.

Applied once, for every codec, in :mod:`vlmdet.codecs.base` (steps 1–2 in ``finish``, steps 3–6 in
``Codec.decode`` when it is given ``classes``), so a label means the same thing whichever family
wrote it:

1. **Whitespace**: stripped, and runs of spaces, tabs or newlines inside it made one space
   (``"traffic \\n light"`` -> ``"traffic light"``).
2. **Empty** (nothing left after step 1): the box is dropped and counted as skipped — the answer
   did not say what it found, so it is a malformed answer, not a detection of some class.
3. **Exact** match to a class: that class.
4. **Case**: a label that equals exactly one class when both are case-folded takes that class's
   spelling (``"Cat"`` -> ``"cat"``).
5. **Plural**: a label whose English singular (``inflect``, which knows irregular forms: ``people`` ->
   ``person``, ``mice`` -> ``mouse``) case-folds to exactly one class takes that class
   (``"cats"`` -> ``"cat"``, ``"Traffic Lights"`` -> ``"traffic light"``).
6. Anything else is **kept as written**: metrics count it as a label that is not a class (a
   hallucinated label), never silently as the nearest class.

A fold that matches two classes (``"Cat"`` with classes ``cat`` and ``CAT``) maps to neither: the
label is kept as written. Grounding answers are not matched (their label is the phrase).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence

_SPACE = re.compile(r"\s+")


def clean_label(label: object) -> str:
    """Step 1: ``label`` as text, stripped, inner whitespace runs made one space."""
    return _SPACE.sub(" ", str(label)).strip()


@functools.lru_cache(maxsize=1)
def _inflect():
    # inflect (a well-kept library) knows English plurals and their irregular forms; a suffix rule
    # of our own would get "people", "mice" or "knives" wrong
    import inflect

    return inflect.engine()


@functools.lru_cache(maxsize=4096)
def _singular(label: str) -> str | None:
    """The singular of ``label`` (its last word made singular), or None when it reads as singular."""
    try:
        single = _inflect().singular_noun(label)
    except Exception:  # noqa: BLE001 - a label inflect cannot read is matched by the other rules only
        return None
    return single or None


class ClassMatcher:
    """Maps written labels to ``classes`` by the policy above (built once per class list)."""

    def __init__(self, classes: Sequence[str]) -> None:
        self.classes = list(classes)
        self._exact = set(self.classes)
        folded: dict[str, list[str]] = {}
        for c in self.classes:
            folded.setdefault(clean_label(c).casefold(), []).append(c)
        # a fold shared by two classes is ambiguous: it maps to neither
        self._folded = {k: v[0] for k, v in folded.items() if len(v) == 1}

    def __call__(self, label: str) -> str:
        if label in self._exact:
            return label
        key = clean_label(label).casefold()
        if key in self._folded:
            return self._folded[key]
        single = _singular(key)
        if single is not None and single.casefold() in self._folded:
            return self._folded[single.casefold()]
        return label


@functools.lru_cache(maxsize=64)
def _matcher(classes: tuple[str, ...]) -> ClassMatcher:
    return ClassMatcher(classes)


def match_classes(labels: Sequence[str], classes: Sequence[str] | None) -> list[str]:
    """``labels`` mapped to ``classes`` (steps 3-6); unchanged when there is no class list."""
    if not classes:
        return list(labels)
    m = _matcher(tuple(classes))
    return [m(label) for label in labels]
