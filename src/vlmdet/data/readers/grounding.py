"""Grounding (RefCOCO style): image + referring phrase -> box(es).

Two sources:

* a JSONL file of ``{"image", "phrase", "bbox"|"boxes"}`` lines (see :mod:`.jsonl`);
* the RefCOCO/RefCOCO+/RefCOCOg release layout: ``refs(unc).p`` (or a ``refs.json`` with the same
  list) next to ``instances.json``, plus the COCO image folder. Each sentence of each ref becomes
  one sample; its box is the referred annotation's, and ``split`` selects ``train``/``val``/
  ``testA``/``testB``/``test`` as in the release.

The release's ``refs(unc).p`` is a pickle, and ``pickle.load`` runs whatever code a crafted file
names. :func:`load_refs_pickle` unpickles with an allow-list of nothing: the refs hold only lists,
dicts, strings and numbers, which pickle builds without naming any class, so a file that asks for
a class or function (``os.system``, ``builtins.eval``...) is refused before anything runs.
"""

from __future__ import annotations

import io
import json
import pickle
from pathlib import Path

import numpy as np

from vlmdet.data.readers.common import MALFORMED, ReadOptions, handle, malformed, make_sample
from vlmdet.data.readers.jsonl import read_jsonl
from vlmdet.data.sample import DataError, DetectionDataset, ReadReport


class _PlainDataUnpickler(pickle.Unpickler):
    """An unpickler that builds plain containers and scalars only: any global (class or function) is refused."""

    def find_class(self, module: str, name: str):  # noqa: D401 - pickle's hook
        raise pickle.UnpicklingError(f"refuses to load {module}.{name}: a RefCOCO refs file holds only lists, dicts, strings and numbers")


def load_refs_pickle(path: Path) -> object:
    """Unpickle ``path`` allowing only plain data (see the module docstring); a clear error otherwise."""
    try:
        return _PlainDataUnpickler(io.BytesIO(path.read_bytes()), encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as exc:
        raise DataError(
            f"{path}: not a plain-data RefCOCO refs pickle ({exc}). vlmdet never runs code from a data file; if this is "
            "the official release, convert it to refs.json with a trusted Python"
        ) from None


def read_refcoco(
    refs: str | Path,
    instances: str | Path,
    images: str | Path,
    split: str = "train",
    options: ReadOptions | None = None,
) -> DetectionDataset:
    """Read one split of a RefCOCO-family release (one sample per referring sentence)."""
    opts = options or ReadOptions()
    refs, instances, images = Path(refs), Path(instances), Path(images)
    for p in (refs, instances):
        if not p.is_file():
            raise DataError(f"RefCOCO file not found: {p}")
    try:
        ref_list = load_refs_pickle(refs) if refs.suffix == ".p" else json.loads(refs.read_text())
        inst = json.loads(instances.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"{refs} / {instances}: invalid JSON ({exc})") from None
    if not isinstance(ref_list, list) or not isinstance(inst, dict):
        raise DataError(f"{refs}: a refs file is a list of refs and {instances} a COCO dict")
    imgs = {im["id"]: im for im in inst.get("images", [])}
    anns = {a["id"]: a for a in inst.get("annotations", [])}
    report = ReadReport(source=f"{refs} [{split}]")
    samples = []
    for ref in ref_list:
        if ref.get("split") != split:
            continue
        where = f"{refs}, ref id {ref.get('ref_id')}"
        try:
            ann = anns.get(ref.get("ann_id"))
            img = imgs.get(ref.get("image_id"))
            if ann is None or img is None:
                raise DataError(f"{where}: ann_id {ref.get('ann_id')} / image_id {ref.get('image_id')} not in {instances}")
            x, y, w, h = (float(v) for v in ann["bbox"])
            for k, sent in enumerate(ref.get("sentences", [])):
                phrase = (sent.get("sent") or sent.get("raw") or "").strip()
                if not phrase:
                    continue
                samples.append(
                    make_sample(
                        sample_id=f"ref{ref.get('ref_id')}_{k}",
                        where=f"{where}, sentence {k}",
                        image_path=images / img["file_name"],
                        boxes=np.array([[x, y, x + w, y + h]]),
                        labels=[phrase],
                        phrase=phrase,
                        declared_wh=(int(img["width"]), int(img["height"])) if "width" in img else None,
                        opts=opts,
                        report=report,
                    )
                )
        except DataError as exc:
            handle(exc, where, opts, report)
        except MALFORMED as exc:  # a record of the wrong shape: the same policy, naming it
            handle(malformed(exc, where), where, opts, report)
    return DetectionDataset(samples, [], report, name=f"{refs}[{split}]")


def read_grounding(path: str | Path, images: str | Path | None = None, options: ReadOptions | None = None) -> DetectionDataset:
    """Read a grounding JSONL; every line must carry a phrase."""
    ds = read_jsonl(path, images=images, options=options)
    missing = [s.source for s in ds.samples if s.phrase is None]
    if missing:
        raise DataError(f"{missing[0]}: a grounding file needs a 'phrase' on every line ({len(missing)} lines lack one)")
    ds.classes = []
    return ds
