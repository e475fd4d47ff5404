"""Run preparation: the one place where ``train``, ``rl``, ``doctor`` and ``eval`` turn settings into a run.

:func:`prepare_run` does, in this order, so that every mistake surfaces before anything expensive:

1. output folder — a directory we can write; a folder holding a finished run, or checkpoints of an
   unfinished one, is never overwritten silently (``--resume`` continues it, ``overwrite=true``
   replaces it);
2. trainer arguments — the method's TRL config is built once to catch bad values;
3. data — ``synth`` written (again, if its settings changed), the splits read, a training split
   with no boxes refused;
4. resume — only from a checkpoint of the *same* run: same settings, same data (``run.json``);
5. model — a ``tiny:<family>`` model built (again, if its spec changed), a ``tiny-pretrained:<family>``
   one taken from the cache (pre-trained first when not there), then loaded;
6. task — the family's codec and prompt style (:class:`~vlmdet.rows.TaskSettings`), class names
   checked against them, every sample checked against the model (its processor can take the
   image, its target can be written); bad samples stop the run or are skipped and counted.

Only the main process writes (``run.json``, ``train_config.json``); every process reads the same
data in the same order, so all agree on classes and task settings.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlmdet.config import ConfigError, RunConfig
from vlmdet.data.readers import ReadOptions, open_dataset
from vlmdet.data.sample import SKIP_HINT, DataError, DetectionDataset, Sample
from vlmdet.rows import TaskSettings

RUN_FILE = "run.json"
CONFIG_FILE = "train_config.json"
BEFORE_FILE = "before_metrics.json"
BUILTIN_SYNTH = "builtin:synth"

# Settings that may differ between a run and its ``--resume``: they change neither what is trained
# nor on what, only how it is launched, logged or batched for evaluation.
RESUME_MAY_CHANGE = frozenset(
    {"resume", "overwrite", "output_dir", "eval.batch_size", "eval.confidence", "cache_images", "cache_max_mb"}
    | {f"{s}.{k}" for s in ("sft", "grpo") for k in ("logging_steps", "dataloader_num_workers", "report_to", "disable_tqdm", "per_device_eval_batch_size")}
)


def log(msg: str) -> None:
    from vlmdet.distributed import is_main_process

    if is_main_process():
        print(f"[vlmdet] {msg}", flush=True)


# ----------------------------------------------------------------------------- output folder
def check_output_dir(out: Path) -> None:
    """``out`` is (or can be made) a directory this process can write into, or a clear error."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"output_dir {out} is a file, not a folder; choose another output_dir")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".vlmdet-write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"output_dir {out} is not writable ({exc.strerror or exc}); choose another output_dir") from None


def _flat(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):  # an empty section adds nothing: {} and an unset section are the same
            out.update(_flat(v, key + "."))
        else:
            out[key] = v
    return out


def _sample_key(s: Sample) -> list[Any]:
    return [s.id, list(s.image_wh), [[round(float(v), 3) for v in b] for b in s.boxes], list(s.labels), s.phrase, s.iscrowd.tolist()]


def fingerprint(cfg: RunConfig, train: DetectionDataset, eval_ds: DetectionDataset | None) -> dict[str, Any]:
    """What makes a run *this* run: its settings (minus :data:`RESUME_MAY_CHANGE`) and its data."""
    settings = {k: v for k, v in _flat(json.loads(json.dumps(cfg.to_dict(), default=str))).items() if k not in RESUME_MAY_CHANGE}
    data = hashlib.sha256()
    for ds in (train, eval_ds):
        for s in ds.samples if ds is not None else []:
            data.update(json.dumps(_sample_key(s)).encode())
        data.update(b"|")
    return {
        "settings": settings,
        "data_hash": data.hexdigest(),
        "train_samples": len(train),
        "eval_samples": len(eval_ds) if eval_ds is not None else 0,
        # how vlmdet split a dataset that had no evaluation split (None: the dataset's own splits)
        "split": train.split_info,
        "eval_ids": [s.id for s in eval_ds.samples] if eval_ds is not None and train.split_info else None,
    }


@dataclass
class RunFolder:
    """The state of a training run's output folder (``run.json``) and its checkpoints."""

    path: Path

    def info(self) -> dict[str, Any] | None:
        """``run.json``; for a folder written before run.json existed, what can be inferred; else None."""
        p = self.path / RUN_FILE
        if p.is_file():
            try:
                return json.loads(p.read_text())
            except json.JSONDecodeError:
                return {"status": "unknown", "legacy": True}
        if (self.path / CONFIG_FILE).is_file():
            finished = (self.path / "report.json").is_file() or (self.path / "vlmdet.json").is_file()
            return {"status": "finished" if finished else "running", "legacy": True}
        return None

    def checkpoints(self) -> list[tuple[int, Path]]:
        """Complete ``checkpoint-N`` folders, oldest first (a run killed mid-save leaves a partial one)."""
        done = []
        for path in self.path.glob("checkpoint-*"):
            step = path.name.split("-", 1)[1]
            if step.isdigit() and (path / "trainer_state.json").is_file() and any(path.glob("*.safetensors")):
                done.append((int(step), path))
        return sorted(done)

    def last_checkpoint(self) -> Path | None:
        done = self.checkpoints()
        return done[-1][1] if done else None

    def check_start(self, cfg: RunConfig, command: str) -> None:
        """Refuse to train over a finished or unfinished run unless ``resume`` / ``overwrite`` says what to do."""
        from vlmdet.distributed import barrier

        info = self.info()
        partial = self.last_checkpoint()
        barrier()  # every process has read the folder's state before the main process may clear it
        if info is None or cfg.resume:
            return
        if cfg.overwrite:
            self.clear()
            return
        fix = f"pick another output_dir, or add --overwrite (overwrite=true) to replace it"
        if info.get("status") == "finished":
            when = f" on {info['finished'][:16].replace('T', ' ')}" if info.get("finished") else ""
            raise ConfigError(f"output_dir {self.path} already holds a finished run (finished{when}): {command} would overwrite it. Keep it: {fix}")
        if partial is not None:
            raise ConfigError(
                f"output_dir {self.path} holds an unfinished run (last checkpoint: {partial.name}). Continue it with --resume, "
                f"or {fix}"
            )

    def check_resume(self, fp: dict[str, Any]) -> Path | None:
        """The checkpoint to resume from — only one of the same run — or ``None`` (nothing to resume)."""
        info = self.info()
        last = self.last_checkpoint()
        if info is None or last is None:
            log(f"--resume: no checkpoint in {self.path}; starting from the beginning")
            return None
        if info.get("legacy"):
            raise ConfigError(
                f"{self.path} holds checkpoints without a run fingerprint (written by an older vlmdet): vlmdet cannot check that they "
                "belong to this run. Start again with --overwrite, or resume with the vlmdet version that wrote them"
            )
        if info.get("status") == "finished":
            raise ConfigError(f"the run in {self.path} already finished ({info.get('steps', '?')} steps): nothing to resume. Use --overwrite to train it again")
        old = info.get("fingerprint", {})
        diffs = []
        before, now = old.get("settings", {}), fp["settings"]
        for key in sorted(set(before) | set(now)):
            if before.get(key, "<unset>") != now.get(key, "<unset>"):
                diffs.append(f"{key}: {before.get(key, '<unset>')!r} then, {now.get(key, '<unset>')!r} now")
        if diffs:
            raise ConfigError(
                f"--resume: the checkpoints in {self.path} belong to a run with other settings ({'; '.join(diffs[:5])}"
                + (f"; and {len(diffs) - 5} more" if len(diffs) > 5 else "") + "). Resume with the same settings, or use another output_dir"
            )
        if old.get("data_hash") != fp["data_hash"]:
            raise ConfigError(
                f"--resume: the data changed since the run in {self.path} started ({old.get('train_samples')} training / "
                f"{old.get('eval_samples')} eval samples then, {fp['train_samples']} / {fp['eval_samples']} now, or their boxes differ). "
                "Resume on the same data, or start a new run in another output_dir"
            )
        return last

    def clear(self) -> None:
        """Remove a previous run (``overwrite``): everything but the reusable ``data/`` and ``base-*`` caches."""
        from vlmdet.distributed import barrier, is_main_process

        if not is_main_process():
            barrier()
            return
        log(f"overwrite: removing the previous run in {self.path}")
        for entry in self.path.iterdir():
            if entry.name == "data" or entry.name.startswith("base-"):
                continue
            shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
        barrier()

    def start(self, cfg: RunConfig, fp: dict[str, Any], method: str, resumed_from: Path | None) -> None:
        """Record the run as started (main process only)."""
        from vlmdet.distributed import is_main_process

        if not is_main_process():
            return
        info = self.info() if resumed_from is not None else None
        record = {
            "method": method,
            "status": "running",
            "started": (info or {}).get("started") or dt.datetime.now().isoformat(timespec="seconds"),
            "resumed": ((info or {}).get("resumed") or []) + ([dt.datetime.now().isoformat(timespec="seconds")] if resumed_from else []),
            "fingerprint": fp,
        }
        (self.path / RUN_FILE).write_text(json.dumps(record, indent=2, default=str))
        (self.path / CONFIG_FILE).write_text(json.dumps(cfg.to_dict(), indent=2, default=str))

    def finish(self, steps: int) -> None:
        from vlmdet.distributed import is_main_process

        if not is_main_process():
            return
        info = self.info() or {}
        info.update(status="finished", finished=dt.datetime.now().isoformat(timespec="seconds"), steps=steps)
        (self.path / RUN_FILE).write_text(json.dumps(info, indent=2, default=str))


# ----------------------------------------------------------------------------- data and model sources
def data_source(cfg: RunConfig, out: Path) -> str:
    """The dataset spec to read: ``synth`` (or ``builtin:synth``) writes vlmdet's synthetic set under
    the run folder — again when its settings changed; a local folder named ``synth`` makes the bare
    name ambiguous."""
    if cfg.data not in ("synth", BUILTIN_SYNTH):
        return cfg.data
    if cfg.data == "synth" and Path("synth").exists():
        raise ConfigError(
            f"data=synth is ambiguous here: it names vlmdet's built-in synthetic dataset and the local folder {Path('synth').resolve()}. "
            f"Write data=./synth for the folder, or data={BUILTIN_SYNTH} for the synthetic set"
        )
    from vlmdet.data.synth import SynthConfig, write_synthetic_coco

    synth = SynthConfig(**{"seed": cfg.seed, **cfg.synth})
    path = out / "data"
    wanted = json.loads(json.dumps(dataclasses.asdict(synth)))
    stamp = path / "dataset.json"
    if stamp.is_file():
        have = {k: v for k, v in json.loads(stamp.read_text()).items() if k in wanted}
        if have == wanted:
            return str(path)
        log(f"the synthetic data settings changed: writing {path} again")
        shutil.rmtree(path)
    log(f"writing synthetic dataset -> {path} ({synth.splits})")
    write_synthetic_coco(path, synth)
    return str(path)


def model_source(cfg: RunConfig, out: Path) -> str:
    """The model to load: ``tiny:<family>`` is built offline under the run folder (again when its spec
    changed); ``tiny-pretrained:<family>`` comes from the user's cache (:mod:`vlmdet.models.pretrained`)."""
    if not cfg.model.startswith(("tiny:", "tiny-pretrained:")):
        return cfg.model
    from vlmdet.families import TinySpec

    kind, family = cfg.model.split(":", 1)
    spec = dataclasses.replace(TinySpec(), **{"seed": cfg.seed, **cfg.tiny})
    if kind == "tiny-pretrained":
        from vlmdet.models.pretrained import PretrainRecipe, ensure_pretrained

        recipe = dataclasses.replace(PretrainRecipe(), **{k: tuple(v) if isinstance(v, list) else v for k, v in cfg.pretrain.items()})
        return str(ensure_pretrained(family, spec, recipe, log=log))
    from vlmdet.models.tiny import TINY_INFO_FILE, build_tiny_model

    path = out / f"base-{family}"
    wanted = json.loads(json.dumps(dataclasses.asdict(spec)))
    info = path / TINY_INFO_FILE
    if (path / "config.json").is_file() and info.is_file():
        if json.loads(info.read_text()).get("spec") == wanted:
            return str(path)
        log(f"the tiny model spec changed: building {path} again")
        shutil.rmtree(path)
    log(f"building tiny {family} model -> {path}")
    build_tiny_model(family, path, spec)
    return str(path)


def read_splits(cfg: RunConfig, data: str, need_train: bool = True) -> tuple[DetectionDataset, DetectionDataset | None]:
    """The training and evaluation splits: the dataset's own, or held out by vlmdet when it has no
    evaluation split (said here, recorded in run.json); a training split without a single box, and
    evaluation images that are also training images, are refused."""
    from vlmdet.data.splits import check_no_overlap, describe, read_train_eval

    opts = ReadOptions(on_error=cfg.on_bad_data, classes=cfg.classes)
    train, eval_ds = read_train_eval(data, cfg.train_split, cfg.eval_split or None, opts, cfg.holdout, closed_eval=cfg.task != "ground")
    log(train.report.summary())
    if train.split_info:
        log(describe(train.split_info))
    if need_train:
        if not len(train):
            raise DataError(f"{data} [{cfg.train_split}]: no training samples" + (f" ({len(train.report.skipped)} skipped)" if train.report.skipped else ""))
        if not any(len(s.targets[1]) for s in train):
            raise DataError(
                f"{data} [{cfg.train_split}]: {len(train)} training images and not one box — nothing to learn. Check that the "
                "annotations belong to these images (COCO image ids, YOLO labels/ folders beside images/) and are not all crowd regions"
            )
    if eval_ds is not None and eval_ds.split_info is None:
        log(eval_ds.report.summary())
    if eval_ds is not None:
        found = check_no_overlap(train, eval_ds, cfg.eval_split or "val", allow=cfg.allow_overlap)
        if found:
            log(f"WARNING: {len(found)} {cfg.eval_split} images are also training images (allow_overlap=true): the scores measure memorisation on them")
    return train, eval_ds


def check_samples(ds: DetectionDataset, settings: TaskSettings | None, processor: Any, on_bad_data: str, targets: bool = True) -> DetectionDataset:
    """Keep the samples the model can take: an image its processor accepts and, for training, a target
    the codec can write. The others stop the run naming the sample (``on_bad_data=raise``) or are
    skipped and counted in ``ds.report``."""
    from vlmdet.models.processing import image_problem

    keep: list[Sample] = []
    for s in ds.samples:
        problem = image_problem(processor, s.image_wh)
        if problem is None and targets and settings is not None:
            try:
                settings.target(s)
            except ValueError as exc:
                problem = str(exc)
        if problem is None:
            keep.append(s)
        elif on_bad_data == "raise":
            raise DataError(f"{s.source or s.id}: {problem}. Fix or remove the image, {SKIP_HINT}")
        else:
            ds.report.add_skip(s.source or s.id, problem)
    if len(keep) < len(ds.samples):
        log(f"{ds.name}: {len(ds.samples) - len(keep)} images the model cannot take were skipped")
        ds.samples = keep
    return ds


def answer_budget(settings: TaskSettings, samples: list[Sample], tokenizer: Any, sample_size: int = 64) -> int:
    """Generation budget: the longest training target in tokens, plus a margin. Only the
    ``sample_size`` longest targets (by characters) are tokenized — the longest in tokens is among them."""
    targets = sorted((settings.target(s) for s in samples), key=len, reverse=True)[:sample_size]
    longest = max((len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in targets), default=32)
    return int(longest * 1.25 + 0.999) + 8


def run_baselines(run: "Run", samples: list[Sample]) -> Any:
    """The image-blind baselines (:mod:`vlmdet.metrics.baselines`) of a run: fitted on its training
    split, scored on ``samples`` (its evaluation images) — for the reports of train and rl, and doctor."""
    from vlmdet.metrics.baselines import fit_and_score

    grounding = run.settings.task == "ground"
    return fit_and_score(run.train.samples, samples, None if grounding else run.classes, f"the training split ({len(run.train)} images)")


# ----------------------------------------------------------------------------- the run
@dataclass
class Run:
    """A prepared run: everything a training method, ``doctor`` or the reports need."""

    cfg: RunConfig
    out: Path
    folder: RunFolder
    model_src: str
    data_src: str
    family: Any
    processor: Any
    train: DetectionDataset
    eval: DetectionDataset | None
    settings: TaskSettings
    model: Any = None
    resume_from: Path | None = None
    fingerprint: dict[str, Any] = field(default_factory=dict)

    @property
    def classes(self) -> list[str]:
        return list(self.settings.classes)


def prepare_run(cfg: RunConfig, command: str = "vlmdet train", load_weights: bool = True, training: bool = True, merge_adapters: bool = False) -> Run:
    """Prepare ``cfg`` (see the module docstring). ``training=False`` (``doctor``) skips the folder's
    run state and resume; ``load_weights=False`` loads only the processor and family;
    ``merge_adapters`` merges a LoRA starting checkpoint into its base (to train on from it).

    A starting checkpoint written by vlmdet (``vlmdet.json``) keeps the task and classes it was
    trained with — the prompts it learned — unless the config names other classes."""
    from vlmdet.distributed import launched, main_first, state
    from vlmdet.models.loading import load_model, load_processor

    if launched():
        state()  # join the launcher's process group before anything is read or written
    out = Path(cfg.output_dir)
    check_output_dir(out)
    folder = RunFolder(out)
    if training:
        folder.check_start(cfg, command)
        cfg.build_trainer_args(out, has_eval=bool(cfg.eval_split))  # bad trainer values fail here, before loading

    with main_first():  # the main process writes the synthetic data / tiny model; the others then find it
        data = data_source(cfg, out)
    train, eval_ds = read_splits(cfg, data)
    fp = fingerprint(cfg, train, eval_ds)
    resume_from = folder.check_resume(fp) if training and cfg.resume else None

    with main_first():
        src = model_source(cfg, out)
    model = None
    if load_weights:
        model, processor, family = load_model(src, cfg.family, quantize_4bit=cfg.finetune == "qlora", max_pixels=cfg.max_pixels, merge=merge_adapters)
    else:
        processor, family = load_processor(src, cfg.family, max_pixels=cfg.max_pixels)

    saved = TaskSettings.load(src) if Path(src).is_dir() else None
    classes = list(cfg.classes or (saved.classes if saved and saved.classes else train.classes))
    if saved and saved.task != cfg.task:
        log(f"WARNING: {src} was trained for task {saved.task}; this run asks for {cfg.task}")
    target_space = getattr(cfg, "target_space", "model")
    settings = TaskSettings.for_model(family.name, processor, task=cfg.task, classes=classes, target_space=target_space)
    settings.check()
    check_samples(train, settings, processor, cfg.on_bad_data, targets=True)
    if eval_ds is not None:
        check_samples(eval_ds, settings, processor, cfg.on_bad_data, targets=False)
    settings.max_new_tokens = cfg.eval.max_new_tokens or answer_budget(settings, train.samples, processor.tokenizer)
    return Run(cfg, out, folder, src, data, family, processor, train, eval_ds, settings, model, resume_from, fp)
