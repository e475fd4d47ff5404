"""``vlmdet export``: a run folder as the plain model folder an inference server loads.

The export holds safetensors weights, the processor, ``vlmdet.json`` (family, codec settings,
task, classes: what :class:`vlmdet.Detector` and ``vlmdet eval`` read) and a
``generation_config.json`` set to vlmdet's decoding (greedy, complete; what ``vlmdet eval``
measured), and it loads with plain transformers — ``AutoModelForImageTextToText`` +
``AutoProcessor``, no vlmdet, no PEFT.

* A **full** run is copied clean (weights re-saved in the chosen dtype; no checkpoints, logs or
  reports).
* A **LoRA** run needs ``--merge``: its adapters (language model, vision tower) and
  ``modules_to_save`` (the projector) are merged into the base weights with PEFT's
  ``merge_and_unload``, in float32, then cast to ``--dtype``. Some servers ignore adapters on the
  vision tower, so a merged model is the safe thing to serve.
* A **QLoRA** run merges into the base loaded de-quantised (its 4-bit weights cannot hold a merge);
  the adapters were trained against the 4-bit weights, so the merged model can answer slightly
  differently: vlmdet says so, and ``vlmdet eval`` on the export measures it.

The folder is written next to ``--out`` and renamed into place when complete, so a stopped export
leaves nothing half-written; ``--push-to-hub`` checks that the hub answers before anything is
written and uploads the folder as one commit.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from vlmdet.models.loading import adapter_base, check_model_source, load_model
from vlmdet.predict.decoding import Decoding
from vlmdet.rows import SETTINGS_FILE, TaskSettings
from vlmdet.report.card import write_card
from vlmdet.run import CONFIG_FILE, log

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def _finetune_mode(src: Path) -> str | None:
    """``lora`` / ``qlora`` / ``full`` as the run recorded it (``train_config.json``), if it did."""
    path = src / CONFIG_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text()).get("finetune")
    except (json.JSONDecodeError, AttributeError):
        return None


def check_hub(repo_id: str) -> Any:
    """An ``HfApi`` that can push to ``repo_id``, or one clear error (before anything is written)."""
    import os

    from huggingface_hub import HfApi

    if os.environ.get("HF_HUB_OFFLINE") == "1":
        raise RuntimeError(f"cannot push to the hub ({repo_id}): HF_HUB_OFFLINE=1. Nothing was written. Export without --push-to-hub, "
                           f"then upload the folder when online (hf upload {repo_id} DIR)")
    api = HfApi()
    try:
        api.whoami()
    except Exception as exc:  # noqa: BLE001 - offline, no token, bad token: all mean "cannot push now"
        reason = "no token: run `hf auth login`" if "token" in str(exc).lower() or "401" in str(exc) else f"{type(exc).__name__}: {str(exc)[:160]}"
        raise RuntimeError(f"cannot push to the hub ({repo_id}): {reason}. Nothing was written. Export without --push-to-hub, "
                           f"then upload the folder when you can (hf upload {repo_id} DIR)") from None
    return api


def export_model(model: str | Path, out: str | Path, merge: bool = False, dtype: str = "bfloat16", push_to_hub: str | None = None,
                 overwrite: bool = False, generation: dict[str, Any] | None = None) -> Path:
    """Write the export of run folder ``model`` to ``out`` (see the module docstring); returns ``out``."""
    if dtype not in DTYPES:
        raise ValueError(f"--dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    src = Path(check_model_source(model))
    if not src.is_dir():
        raise FileNotFoundError(f"{model} is not a local folder: export takes a folder written by vlmdet train or vlmdet rl")
    settings = TaskSettings.load(src)
    if settings is None:
        raise FileNotFoundError(f"{src} has no {SETTINGS_FILE}: export takes a folder written by vlmdet train or vlmdet rl "
                                "(a base model needs no export: load it as it is)")
    out = Path(out).expanduser().resolve()
    if out == src or src in out.parents:
        raise ValueError(f"--out {out} is inside the run folder {src}; choose a folder outside it")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        if not overwrite:
            raise FileExistsError(f"{out} exists and is not empty; choose another --out or add --overwrite to replace it")
    base = adapter_base(str(src))
    mode = _finetune_mode(src)
    if base is not None and not merge:
        raise ValueError(f"{src} is a LoRA run (adapters on {base}): add --merge to write a model that loads without PEFT "
                         "(the adapters merged into the base weights)")
    decoding = Decoding(generation)  # checked before the model loads
    api = check_hub(push_to_hub) if push_to_hub else None

    if base is not None and mode == "qlora":
        log(f"QLoRA run: merging the adapters into the base model de-quantised (loaded in float32, saved in {dtype}). The adapters were "
             "trained against 4-bit weights, so the merged model may answer slightly differently: check it with "
             f"`vlmdet eval --model {out} --data ...`")
    # merge in float32 (a merge in bfloat16 rounds the sum), cast at the end
    net, processor, fam = load_model(str(src), family=settings.family, dtype=torch.float32, merge=base is not None)
    if hasattr(net, "peft_config"):  # a PEFT model the merge did not unwrap: never write adapters as a plain model
        raise RuntimeError(f"{src}: the adapters could not be merged ({type(net).__name__}); export needs a plain model")
    net = net.to(DTYPES[dtype])
    net.generation_config = decoding.config(net, settings.max_new_tokens)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        net.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        settings.save(tmp)
        (tmp / "export.json").write_text(json.dumps({
            "source": str(src), "base_model": base, "finetune": mode or ("lora" if base else "full"), "merged": base is not None,
            "dtype": dtype, "generation": decoding.record(), "family": fam.name,
        }, indent=2))
        write_card(tmp, source=src, name=out.name)  # the card says what the model is; --push-to-hub uploads it with the weights
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    size = sum(p.stat().st_size for p in out.glob("*.safetensors")) / 2**20
    log(f"exported {src.name} ({'LoRA merged' if base else 'full'}, {dtype}, {size:.1f} MiB of weights) to {out}; it loads with "
         f"{fam.auto_class}.from_pretrained + AutoProcessor.from_pretrained, or vlmdet.Detector.from_pretrained")
    if api is not None:
        api.create_repo(push_to_hub, exist_ok=True)
        api.upload_folder(folder_path=str(out), repo_id=push_to_hub, commit_message=f"vlmdet export of {src.name}")
        log(f"pushed {out} to https://huggingface.co/{push_to_hub} (one commit)")
    return out
