"""Train a small byte-level BPE tokenizer offline, with the splitting rules of a real family.

vlmdet cannot download a tokenizer, so tiny models get one trained here with `tokenizers` on a
corpus that vlmdet writes itself: the prompts of ``vlmdet.prompts``, detection targets in every
codec's format, class names and a little English. The pre-tokenizer is the family's own (for Qwen,
the regex that splits every digit into its own token), so coordinates tokenize the way they do for
the real model and a tiny model learns the same digit-by-digit task.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

# The exact split regex of Qwen2/2.5/3 tokenizers (transformers' tokenization_qwen2.PRETOKENIZE_REGEX):
# `\p{N}` alone means one token per digit.
QWEN_PRETOKENIZE_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)

WORDS = (
    "the a an of and or to in on at with for from by is are be this that these those it its image picture photo "
    "object objects box boxes bounding detect locate find ground point region output outputs answer give list "
    "all every each one two three none no yes left right top bottom center middle small large big red green blue "
    "yellow orange purple pink brown black white gray grey color shape circle square triangle rectangle star "
    "cross diamond ellipse hexagon person people car bus truck bicycle motorcycle dog cat bird horse cow sheep "
    "chair table bottle cup phone laptop book clock tree house road sky water you are helpful assistant please "
    "describe what where which how many there here format json coordinates label labels category class classes "
    "x y width height pixel pixels relative absolute scale thousand"
).split()


def detection_corpus(class_names: Iterable[str] = (), n_targets: int = 4000, seed: int = 0) -> Iterator[str]:
    """Yield training text for a tiny tokenizer: prompts, JSON/loc targets, class names and words."""
    # Imported lazily: prompts and codecs import nothing from here, but keep the tokenizer module light.
    from vlmdet.prompts import example_prompts

    rng = random.Random(seed)
    names = list(dict.fromkeys(list(class_names) + WORDS))
    yield " ".join(WORDS)
    yield from example_prompts(names, rng, n=400)
    for _ in range(n_targets):
        k = rng.randint(0, 4)
        objs = []
        for _ in range(k):
            x1, y1 = rng.randint(0, 999), rng.randint(0, 999)
            x2, y2 = rng.randint(x1, 1000), rng.randint(y1, 1000)
            objs.append(f'{{"bbox_2d": [{x1}, {y1}, {x2}, {y2}], "label": "{rng.choice(names)}"}}')
        yield "```json\n[\n" + ",\n".join("\t" + o for o in objs) + "\n]\n```"
        yield "[" + ", ".join(objs) + "]"
        yield " ".join(rng.sample(names, k=min(len(names), 3)))


def train_byte_level_bpe(
    corpus: Iterable[str],
    vocab_size: int,
    split_regex: str = QWEN_PRETOKENIZE_REGEX,
) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Train byte-level BPE and return ``(vocab, merges)`` ready for a transformers tokenizer class.

    The returned vocab holds no special tokens: the family adds them in its own order, so their ids
    follow the ordinary vocabulary exactly as in the real checkpoints.
    """
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(split_regex), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    state = tok.to_str()
    import json

    model = json.loads(state)["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    return model["vocab"], merges
