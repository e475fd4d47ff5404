"""Run configuration: one YAML file plus ``key=value`` overrides, checked before anything loads.

:class:`RunConfig` holds what every training method shares (model, data, task, what trains, the
evaluation and decoding around it); each method adds its own trainer section, the way TRL keeps one
config per trainer: ``vlmdet train`` (:class:`vlmdet.train.config.TrainConfig`, section ``sft:`` =
any ``trl.SFTConfig`` field) and ``vlmdet rl`` (:class:`vlmdet.train.rl_config.RLConfig`, section
``grpo:`` = any ``trl.GRPOConfig`` field). ``lora:`` holds any ``peft.LoraConfig`` field.

Overrides use dotted keys (``sft.learning_rate=1e-4``, ``lora.r=8``, ``eval.batch_size=4``); a bare
key that is not a vlmdet field goes to the trainer section or ``lora`` when it belongs there
(``learning_rate=1e-4`` == ``sft.learning_rate=1e-4``). Values are parsed as YAML 1.2.

Every mistake is found here, before a model or dataset is touched, and names the setting: unknown
keys at any level (``eval.``, ``synth.``, ``tiny.``, ``generation.``, the trainer section,
``lora.``), values of the wrong type, invalid YAML (with its line).
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, ClassVar, Literal, Union

import yaml


class ConfigError(ValueError):
    """A setting is unknown, has the wrong type or value, or the config file is not valid YAML."""


class _Loader(yaml.SafeLoader):
    """YAML 1.2 scalars: ``1e-3`` is a float (YAML 1.1 reads a string) and only true/false are
    booleans (YAML 1.1 turns ``save_strategy: no`` into ``False``, which TrainingArguments rejects)."""


_Loader.yaml_implicit_resolvers = {
    first: [r for r in resolvers if r[0] != "tag:yaml.org,2002:bool"] for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)?(?:\.[0-9_]*)?[eE][-+]?[0-9]+$|^[-+]?[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?$|^[-+]?\.(?:inf|Inf|INF)$|^\.(?:nan|NaN|NAN)$"),
    list("-+0123456789."),
)


def yaml_value(text: str, where: str = "") -> Any:
    """Parse YAML 1.2 text; a syntax error names ``where`` and the line and column."""
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{where or 'value'}: invalid YAML{at}: {problem}") from None


# a box's confidence from its tokens' log-probabilities (vlmdet.predict.decoding.span_confidence);
# here, with the settings, so that checking a setting loads neither torch nor transformers
CONFIDENCE_KINDS = ("geometric_mean", "min", "mean", "product")


@dataclass
class EvalConfig:
    """Detection evaluation during and around training."""

    max_samples: int | None = 200  # fixed subset of the eval split scored at every eval (None = all)
    batch_size: int = 16
    max_new_tokens: int | None = None  # None = from the longest training target
    before: bool = True  # score the base model before the first step (the "before" column)
    after: bool = True  # score the trained model after the last step
    confidence: str = "geometric_mean"  # a box's confidence from its tokens: geometric_mean | min | mean | product

    def __post_init__(self) -> None:
        if self.confidence not in CONFIDENCE_KINDS:
            raise ConfigError(f"eval.confidence must be one of {', '.join(CONFIDENCE_KINDS)}, got {self.confidence!r}")


@dataclass
class RunConfig:
    """Settings every vlmdet run shares (``vlmdet train``, ``vlmdet rl``, ``vlmdet doctor``).

    A subclass names its trainer section (``trainer_section``) and the TRL config class whose
    fields that section takes (``trainer_args_class``).
    """

    trainer_section: ClassVar[str] = ""
    demo_config: ClassVar[str] = ""

    # local dir, hub id, tiny:<family> (built offline, random weights) or tiny-pretrained:<family>
    # (the same tiny model pre-trained offline on generated scenes, cached: vlmdet.models.pretrained)
    model: str = "tiny:qwen2_5_vl"
    family: str | None = None  # default: read from the model's config
    data: str = "synth"  # dataset spec (vlmdet.data.readers.open_dataset), or "synth" (vlmdet's synthetic shapes)
    train_split: str = "train"
    eval_split: str | None = "val"  # null or "": no evaluation split
    # A dataset with no evaluation split (one annotation file, or only a train split) is split by
    # vlmdet: this share of its images held out for val (and test), stratified, seeded by `seed`.
    val_fraction: float = 0.2
    test_fraction: float = 0.0
    allow_overlap: bool = False  # score on evaluation images that are also training images, on purpose
    task: str = "detect"  # detect | detect_named | ground
    classes: list[str] | None = None  # closed class set; default: the training data's classes
    on_bad_data: str = "raise"  # raise | skip
    max_pixels: int | None = None  # override the processor's image budget (bounds sequence length)
    finetune: str = "lora"  # lora | qlora | full
    freeze_vision: bool | None = None  # default: True for lora/qlora, False for full
    freeze_projector: bool | None = None  # default: True for lora/qlora, False for full
    lora_vision: bool = False  # add LoRA to the vision tower's attention
    lr_vision: float | None = None  # learning rates per group (None = the trainer's learning_rate)
    lr_projector: float | None = None
    lr_language: float | None = None
    # Decoded training images kept in memory, each resized to what the processor feeds the model
    # (never larger), up to cache_max_mb in all; images beyond the budget are decoded on access.
    cache_images: bool = True
    cache_max_mb: int = 2048
    max_seconds: float | None = None  # stop training after this many seconds of it (then save and report as usual)
    grad_check_steps: int = 3  # warn when a trainable group gets zero/non-finite grads this many steps running
    stop_on_bad_grads: bool = False
    output_dir: str = "runs/train"
    resume: bool = False  # continue the run in output_dir from its last checkpoint (same config, same data)
    overwrite: bool = False  # replace a finished or unfinished run in output_dir
    seed: int = 0
    synth: dict[str, Any] = field(default_factory=dict)  # SynthConfig fields when data == "synth"
    tiny: dict[str, Any] = field(default_factory=dict)  # TinySpec fields when model == tiny:<family> / tiny-pretrained:<family>
    pretrain: dict[str, Any] = field(default_factory=dict)  # PretrainRecipe fields when model == tiny-pretrained:<family>
    eval: EvalConfig = field(default_factory=EvalConfig)
    # Decoding of every answer vlmdet scores (before/after, in-training eval): any GenerationConfig
    # field over vlmdet's greedy defaults, which switch every penalty and n-gram ban off explicitly.
    generation: dict[str, Any] = field(default_factory=dict)
    lora: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.eval, dict):
            self.eval = EvalConfig(**self.eval)
        for name, value, allowed in (
            ("finetune", self.finetune, ("lora", "qlora", "full")),
            ("task", self.task, ("detect", "detect_named", "ground")),
            ("on_bad_data", self.on_bad_data, ("raise", "skip")),
        ):
            if value not in allowed:
                raise ConfigError(f"{name} must be {', '.join(allowed[:-1])} or {allowed[-1]}, got {value!r}")
        if self.resume and self.overwrite:
            raise ConfigError("resume and overwrite exclude each other: --resume continues the run in output_dir, --overwrite replaces it")
        if not (0 <= self.val_fraction < 1 and 0 <= self.test_fraction < 1 and self.val_fraction + self.test_fraction < 1):
            raise ConfigError(f"val_fraction and test_fraction must lie in [0, 1) and sum below 1, got {self.val_fraction} and {self.test_fraction}")
        if self.cache_max_mb < 0:
            raise ConfigError(f"cache_max_mb must be >= 0, got {self.cache_max_mb}")
        if self.freeze_vision is None:
            self.freeze_vision = self.finetune != "full"
        if self.freeze_projector is None:
            self.freeze_projector = self.finetune != "full"

    @classmethod
    def trainer_args_class(cls) -> type | None:
        """The TRL/transformers config class of the trainer section (``None``: no section)."""
        return None

    @property
    def trainer_args(self) -> dict[str, Any]:
        """The trainer section's values (``sft`` or ``grpo``)."""
        return getattr(self, self.trainer_section) if self.trainer_section else {}

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def holdout(self) -> Any:
        """How a dataset without an evaluation split is split (:class:`vlmdet.data.splits.Holdout`)."""
        from vlmdet.data.splits import Holdout

        return Holdout(self.val_fraction, self.test_fraction, self.seed)


# ----------------------------------------------------------------------------- type checks
def _describe(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        return " or ".join(dict.fromkeys(_describe(a) for a in args))
    if hint is type(None):
        return "null"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    names = {bool: "true/false", int: "an integer", float: "a number", str: "a string", dict: "a mapping", list: "a list", tuple: "a list"}
    if origin is dict and len(args) == 2 and args[1] is not Any:
        plural = {str: "strings", int: "integers", float: "numbers", bool: "true/false values"}
        return f"a mapping of {plural.get(args[0], _describe(args[0]))} to {plural.get(args[1], _describe(args[1]))}"
    if origin in (list, tuple, dict):
        return names[origin]
    if isinstance(hint, type) and issubclass(hint, Enum):
        return "one of " + ", ".join(repr(m.value) for m in hint)
    return names.get(hint, getattr(hint, "__name__", str(hint)))


def accepts(hint: Any, value: Any) -> bool:
    """Whether ``value`` (parsed from YAML) fits the type ``hint``; types this cannot judge pass
    (the library that owns the field checks those itself)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any or hint is typing.Any:
        return True
    if origin in (Union, types.UnionType):
        return any(accepts(a, value) for a in args)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin is Literal:
        return value in args
    if origin in (list, tuple, typing.Sequence) or hint in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return False
        inner = [a for a in args if a is not Ellipsis]
        return len(inner) != 1 or all(accepts(inner[0], v) for v in value)
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            return False
        return len(args) != 2 or all(accepts(args[0], k) and accepts(args[1], v) for k, v in value.items())
    if isinstance(hint, type) and issubclass(hint, Enum):
        return isinstance(value, hint) or value in {m.value for m in hint}
    return True


def check_section(values: dict[str, Any], cls: type, section: str, what: str) -> None:
    """Every key of ``values`` is a field of dataclass ``cls`` and its value has the field's type."""
    if not isinstance(values, dict):
        raise ConfigError(f"{section}: expected a mapping of {what} settings, got {values!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(values) - names)
    if unknown:
        close = {k: _close(k, names) for k in unknown}
        hint = "; ".join(f"did you mean {section}.{c}?" for c in close.values() if c)
        raise ConfigError(f"unknown setting(s) {', '.join(f'{section}.{k}' for k in unknown)}: not {what} fields" + (f" ({hint})" if hint else ""))
    for key, value in values.items():
        if not accepts(hints.get(key, Any), value):
            raise ConfigError(f"{section}.{key}: expected {_describe(hints[key])}, got {value!r} ({type(value).__name__})")


def _close(key: str, names: set[str]) -> str | None:
    import difflib

    match = difflib.get_close_matches(key, sorted(names), n=1, cutoff=0.75)
    return match[0] if match else None


# ----------------------------------------------------------------------------- overrides
def _set(tree: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for k in keys[:-1]:
        node = node.setdefault(k, {})
        if not isinstance(node, dict):
            raise ConfigError(f"cannot set {dotted}: {k} is not a section")
    node[keys[-1]] = value


def parse_overrides(items: list[str]) -> list[tuple[str, Any]]:
    """``["a.b=1", "--c", "x", "--flag"]`` -> ``[("a.b", 1), ("c", "x"), ("flag", True)]``."""
    out, i = [], 0
    while i < len(items):
        item = items[i]
        if item.startswith("--"):
            key = item[2:]
            if "=" in key:
                key, raw = key.split("=", 1)
                out.append((key.replace("-", "_"), yaml_value(raw, item)))
            elif i + 1 < len(items) and not items[i + 1].startswith("--") and "=" not in items[i + 1]:
                key = key.replace("-", "_")
                out.append((key, yaml_value(items[i + 1], f"--{key} {items[i + 1]}")))
                i += 1
            else:
                out.append((key.replace("-", "_"), True))
        elif "=" in item:
            key, raw = item.split("=", 1)
            out.append((key.replace("-", "_"), yaml_value(raw, item)))
        else:
            raise ConfigError(f"unexpected argument {item!r}: use key=value or --key value")
        i += 1
    return out


def _fields(cls: type | None) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)} if cls is not None else set()


def _section_classes(cls: type[RunConfig]) -> dict[str, tuple[type, str]]:
    """Sections checked field by field: name -> (dataclass, what its fields are)."""
    from peft import LoraConfig

    from vlmdet.data.synth import SynthConfig
    from vlmdet.families.base import TinySpec
    from vlmdet.models.pretrained import PretrainRecipe

    sections = {"eval": (EvalConfig, "vlmdet eval"), "synth": (SynthConfig, "SynthConfig"), "tiny": (TinySpec, "TinySpec"),
                "pretrain": (PretrainRecipe, "PretrainRecipe"), "lora": (LoraConfig, "LoraConfig")}
    args_cls = cls.trainer_args_class()
    if args_cls is not None:
        sections[cls.trainer_section] = (args_cls, args_cls.__name__)
    return sections


def settings_pairs(settings: dict[str, Any] | None, sections: set[str]) -> list[tuple[str, Any]]:
    """Python keyword settings as override pairs: ``lora={"r": 8}`` -> ``("lora.r", 8)`` (a section is
    updated key by key, as ``lora.r=8`` on the command line does); tuples become lists, as YAML gives them."""

    def plain(v: Any) -> Any:
        if isinstance(v, tuple):
            return [plain(x) for x in v]
        if isinstance(v, Path):
            return str(v)
        return v

    out: list[tuple[str, Any]] = []
    for key, value in (settings or {}).items():
        if key in sections and isinstance(value, dict):
            out += [(f"{key}.{k}", plain(v)) for k, v in value.items()]
        else:
            out.append((key, plain(value)))
    return out


def load_config(path: str | Path | None, overrides: list[str] | None, cls: type[RunConfig], settings: dict[str, Any] | None = None) -> RunConfig:
    """Read ``path`` (YAML; ``"demo"`` = the class's demo config) and apply ``overrides`` (command-line
    ``key=value`` strings), then ``settings`` (Python values, e.g. ``learning_rate=1e-4, lora={"r": 8}``).

    Raises :class:`ConfigError` naming the setting for unknown keys (at any level), wrong types and
    invalid YAML, and :class:`FileNotFoundError` for a missing file.
    """
    tree: dict[str, Any] = {}
    if path is not None:
        p = Path(cls.demo_config if str(path) == "demo" and cls.demo_config else path)
        if not p.is_file():
            raise FileNotFoundError(f"config file not found: {p}")
        tree = yaml_value(p.read_text(), str(p)) or {}
        if not isinstance(tree, dict):
            raise ConfigError(f"{p}: a config is a YAML mapping of settings, got {type(tree).__name__}")
    own = {f.name for f in dataclasses.fields(cls)}
    sections = _section_classes(cls)
    section = cls.trainer_section
    trainer_fields = _fields(sections[section][0]) if section in sections else set()
    lora_fields = _fields(sections["lora"][0])
    for key, value in parse_overrides(overrides or []) + settings_pairs(settings, set(sections)):
        head = key.split(".")[0]
        if head in own:
            _set(tree, key, value)
        elif key in trainer_fields:
            _set(tree, f"{section}.{key}", value)
        elif key in lora_fields:
            _set(tree, f"lora.{key}", value)
        else:
            close = _close(key, own | trainer_fields | lora_fields)
            raise ConfigError(
                f"unknown setting {key!r}: not a vlmdet setting, nor a {sections[section][1] if section in sections else 'trainer'} or "
                f"LoraConfig field" + (f" (did you mean {close}?)" if close else f"; vlmdet settings: {', '.join(sorted(own))}")
            )
    unknown = sorted(set(tree) - own)
    if unknown:
        close = [c for c in (_close(k, own) for k in unknown) if c]
        raise ConfigError(
            f"unknown setting(s) {', '.join(unknown)} in the config" + (f" (did you mean {', '.join(close)}?)" if close else "")
            + f"; valid: {', '.join(sorted(own))}"
        )
    hints = typing.get_type_hints(cls)
    for key, value in tree.items():
        if key == "generation":
            from vlmdet.predict.decoding import check_generation

            if not isinstance(value, dict):
                raise ConfigError(f"generation: expected a mapping of GenerationConfig settings, got {value!r}")
            try:
                check_generation(value)
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
        elif key in sections:
            check_section(value if value is not None else {}, sections[key][0], key, sections[key][1])
        elif not accepts(hints[key], value):
            raise ConfigError(f"{key}: expected {_describe(hints[key])}, got {value!r} ({type(value).__name__})")
    tree = {k: ({} if v is None and k in sections else v) for k, v in tree.items()}
    return cls(**tree)
