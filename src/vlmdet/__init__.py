"""vlmdet: fine-tune vision-language models for object detection and grounding with TRL.

The flow (one subpackage per stage)::

    data (readers, synth) -> Sample -> prompts + codecs (per family) -> train (TRL rows, collator,
    SFTTrainer, callbacks) -> predict (batched generate -> decode -> original pixels) -> metrics
    (COCO mAP, IoU) -> report (before vs after)

Inside vlmdet a box is always ``xyxy`` float pixels of the *original* image; codecs convert to and
from each model family's space.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["Detector", "__version__"]


def __getattr__(name: str):
    # `from vlmdet import Detector` without importing torch and transformers for `import vlmdet`
    if name == "Detector":
        from vlmdet.api import Detector

        return Detector
    raise AttributeError(f"module 'vlmdet' has no attribute {name!r}")
