"""vlmdet: fine-tune vision-language models for object detection and grounding with TRL.

The flow (one subpackage per stage)::

    data (readers, synth) -> Sample -> prompts + codecs (per family) -> train (TRL rows, collator,
    SFTTrainer, callbacks) -> predict (batched generate -> decode -> original pixels) -> metrics
    (COCO mAP, IoU) -> report (before vs after)

Inside vlmdet a box is always ``xyxy`` float pixels of the *original* image; codecs convert to and
from each model family's space.

The public API is what ``__all__`` lists (the README's "Python API" section); everything else is
internal. Names load on first use, so ``import vlmdet`` imports neither torch nor transformers::

    import vlmdet
    result = vlmdet.train("my.yaml", learning_rate=1e-4)     # one call per command
    detector = vlmdet.Detector.from_pretrained(result.output_dir)

Parts for your own TRL script (see ``examples/own_trl_script.py``): ``TaskSettings`` (prompts,
targets, decoding for one model), ``RowSource`` (samples -> TRL rows), ``DetectionCollator``,
``GradNormCallback``, ``DetectionEvalCallback``, ``get_codec``, ``build_prompt``,
``reward_functions``, ``DetectionMetrics`` / ``evaluate_predictions``.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> the module that defines it (imported on first access)
_EXPORTS = {
    # one call per command
    "train": "vlmdet.commands",
    "rl": "vlmdet.commands",
    "evaluate": "vlmdet.commands",
    "export": "vlmdet.commands",
    "doctor": "vlmdet.commands",
    "Interrupted": "vlmdet.commands",
    "EvalResult": "vlmdet.commands",
    "ExportResult": "vlmdet.commands",
    "DoctorResult": "vlmdet.commands",
    "TrainResult": "vlmdet.train.recipe",
    # configs and errors
    "TrainConfig": "vlmdet.train.config",
    "RLConfig": "vlmdet.train.rl_config",
    "ConfigError": "vlmdet.config",
    "DataError": "vlmdet.data.sample",
    # a trained model as a detector
    "Detector": "vlmdet.api",
    # data
    "Sample": "vlmdet.data.sample",
    "DetectionDataset": "vlmdet.data.sample",
    "open_dataset": "vlmdet.data.readers",
    "read_supervision": "vlmdet.data.readers.sv_dataset",
    "SynthConfig": "vlmdet.data.synth",
    "write_synthetic_coco": "vlmdet.data.synth",
    "build_tiny_model": "vlmdet.models.tiny",
    # the parts, for your own TRL script
    "TaskSettings": "vlmdet.rows",
    "RowSource": "vlmdet.rows",
    "PromptSource": "vlmdet.rows",
    "DetectionCollator": "vlmdet.train.collator",
    "GradNormCallback": "vlmdet.train.callbacks",
    "DetectionEvalCallback": "vlmdet.train.callbacks",
    "get_codec": "vlmdet.codecs",
    "build_prompt": "vlmdet.prompts",
    "reward_functions": "vlmdet.rewards",
    "DetectionMetrics": "vlmdet.metrics",
    "Predictor": "vlmdet.predict",
    "evaluate_predictions": "vlmdet.predict",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'vlmdet' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


# `vlmdet.train`, `.rl`, `.evaluate`, `.export` and `.doctor` are the public functions, and some share
# their name with an internal module (vlmdet/train/, vlmdet/evaluate.py, ...). Importing such a module
# binds it as an attribute of the package, which would hide the function after the first training
# run; the package keeps the function instead (the modules stay importable by their full names:
# `from vlmdet.train import model`, not `import vlmdet.train.model as m`, which resolves through
# the attribute and so reaches the function).
_COMMANDS = frozenset({"train", "rl", "evaluate", "export", "doctor"})


class _Package(types.ModuleType):
    def __setattr__(self, name: str, value: Any) -> None:
        if name in _COMMANDS and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


if TYPE_CHECKING:  # for type checkers and IDEs: the same names, imported eagerly
    from vlmdet.api import Detector
    from vlmdet.codecs import get_codec
    from vlmdet.commands import DoctorResult, EvalResult, ExportResult, Interrupted, doctor, evaluate, export, rl, train
    from vlmdet.config import ConfigError
    from vlmdet.data.readers import open_dataset
    from vlmdet.data.readers.sv_dataset import read_supervision
    from vlmdet.data.sample import DataError, DetectionDataset, Sample
    from vlmdet.data.synth import SynthConfig, write_synthetic_coco
    from vlmdet.metrics import DetectionMetrics
    from vlmdet.models.tiny import build_tiny_model
    from vlmdet.predict import Predictor, evaluate_predictions
    from vlmdet.prompts import build_prompt
    from vlmdet.rewards import reward_functions
    from vlmdet.rows import PromptSource, RowSource, TaskSettings
    from vlmdet.train.callbacks import DetectionEvalCallback, GradNormCallback
    from vlmdet.train.collator import DetectionCollator
    from vlmdet.train.config import TrainConfig
    from vlmdet.train.rl_config import RLConfig
    from vlmdet.train.recipe import TrainResult
