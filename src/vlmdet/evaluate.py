"""``vlmdet eval``: batched generation over whole splits -> decode -> metrics -> reports.

One model (``--model``), optionally a second on the same images (``--compare``), on one dataset or
several (``--data A --data B``: each scored on its own, then the mean of the per-dataset figures,
as multi-dataset detection benchmarks report). Every model answers with the same decoding
(greedy unless ``--generation`` says otherwise), which ``metrics.json`` and the reports state.

Writes into ``--out`` (per dataset in ``--out/<name>/`` when there are several):

* ``metrics.json``  — per model: the :class:`~vlmdet.metrics.DetectionResult` (AP with constant
  scores and ranked by confidence, F1 at IoU 0.5 / 0.95, duplicates, hallucinated labels, count
  error, label confusion), the decoding settings, and with several datasets their mean;
* ``predictions.json`` — per image: raw answer, boxes (original pixels), labels, confidences, parse flag;
* ``results.json``  — the same detections in COCO results format, scored by confidence
  (``vlmdet metrics`` reads it; image and category ids are the COCO file's own);
* ``report.md`` / ``report.html`` — the metrics table (models side by side), per-class AP, and in
  the page the gallery of the worst images;
* ``images/``       — a handful of annotated images, ground truth vs prediction.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlmdet.data.readers import ReadOptions
from vlmdet.data.sample import DataError, DetectionDataset
from vlmdet.data.readers import dataset_splits
from vlmdet.data.splits import Holdout, check_no_overlap, describe, read_split
from vlmdet.metrics.baselines import Baselines, fit_and_score, verdict
from vlmdet.metrics import DetectionResult
from vlmdet.models.loading import load_processor
from vlmdet.predict import Prediction, Predictor, evaluate_predictions
from vlmdet.predict.decoding import Decoding
from vlmdet.predict.endpoint import CACHE_FILE, EndpointSpec, Failure, answers_need_special_tokens, check_served, endpoint_settings
from vlmdet.predict.loading import load_for_inference
from vlmdet.report import decoding_note, markdown_table, print_table
from vlmdet.report.draw import gt_vs_pred, save_annotated
from vlmdet.run import check_samples, log

SCORE_NOTE = (
    "Scores: VLMs give no confidence of their own. The AP rows give every predicted box score 1.0 and "
    "COCOeval ranks boxes in the order the model listed them (its sort is stable): AP at the one "
    "operating point the model produces. The rows 'ranked by confidence' score each box by its tokens' "
    "probabilities (see --confidence), a real ranking."
)
MEAN_FIELDS = ("map", "map50", "map75", "ar100", "f1_50", "f1_95", "mean_iou", "duplicate_rate", "hallucinated_rate", "count_error", "parse_failure_rate", "preds_per_image")


@dataclass
class ModelEval:
    name: str
    result: DetectionResult
    predictions: list[Prediction]


def dataset_names(specs: list[str]) -> list[str]:
    """A short, unique name per dataset spec (its folder or file name)."""
    names = []
    for spec in specs:
        base = Path(spec[3:] if spec.startswith("hf:") else spec).name or spec
        name, k = base, 2
        while name in names:
            name, k = f"{base}-{k}", k + 1
        names.append(name)
    return names


def mean_result(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-dataset figures averaged (undefined ones, -1, left out), as multi-dataset benchmarks do."""
    out: dict[str, Any] = {"n_datasets": len(results)}
    for key in MEAN_FIELDS:
        values = [r[key] for r in results if r.get(key, -1) != -1]
        out[key] = sum(values) / len(values) if values else -1.0
    kinds = set.intersection(*(set(r.get("by_score", {})) for r in results)) if results else set()
    out["by_score"] = {k: {f: sum(r["by_score"][k][f] for r in results) / len(results) for f in ("map", "map50", "map75", "ar100")} for k in kinds}
    out["n_images"] = sum(r["n_images"] for r in results)
    return out


def training_data(model_dir: str | None) -> tuple[str, str, Holdout] | None:
    """The data a vlmdet run folder was trained on, from its ``run.json``: (spec, train split, holdout),
    or ``None`` (not a run folder, or its data is not on this machine)."""
    from vlmdet.run import BUILTIN_SYNTH, RunFolder

    if not model_dir or not Path(model_dir).is_dir():
        return None
    info = RunFolder(Path(model_dir)).info() or {}
    settings = (info.get("fingerprint") or {}).get("settings") or {}
    data = settings.get("data")
    if not isinstance(data, str):
        return None
    if data in ("synth", BUILTIN_SYNTH):
        data = str(Path(model_dir) / "data")
    if not data.startswith("hf:") and not Path(data).exists():
        return None
    holdout = Holdout(float(settings.get("val_fraction", 0.2)), float(settings.get("test_fraction", 0.0)), int(settings.get("seed", 0)))
    return data, str(settings.get("train_split", "train")), holdout


def _same_data(a: str, b: str) -> bool:
    return a == b or (not a.startswith("hf:") and not b.startswith("hf:") and Path(a).resolve() == Path(b).resolve())


def training_split(model: str) -> DetectionDataset | None:
    """The training split of a vlmdet run folder, read again as the run split it (``None`` otherwise)."""
    trained = training_data(model)
    if trained is None:
        return None
    return read_split(trained[0], trained[1], ReadOptions(on_error="skip", verify_images=False), trained[2])


def read_eval_split(model: str | None, spec: str, split: str, on_bad_data: str = "raise", allow_overlap: bool = False,
                    train: DetectionDataset | None = None) -> DetectionDataset:
    """Split ``split`` of ``spec`` as the model's training run split it (a one-set dataset: the same
    held-out images), refused when its images are the run's training images ``train`` (unless
    ``allow_overlap``; :func:`training_split` reads them)."""
    trained = training_data(model)
    holdout = trained[2] if trained and _same_data(trained[0], spec) else Holdout()
    ds = read_split(spec, split, ReadOptions(on_error=on_bad_data), holdout)
    if ds.split_info:
        log(describe(ds.split_info))
    if train is not None:
        found = check_no_overlap(train, ds, split, allow=allow_overlap)
        if found:
            log(f"WARNING: {len(found)} of these images trained {model} (--allow-overlap): the scores measure memorisation on them")
    return ds


def eval_baselines(spec: str, split: str, ds: DetectionDataset, train: DetectionDataset | None) -> Baselines:
    """The image-blind baselines for ``ds``, fitted on the model's training split when it is known, else
    on the dataset's own training split, else — said in their note — on the evaluated images themselves."""
    note = ""
    fitted_on = "the model's training split"
    if train is None and split != "train" and "train" in (dataset_splits(spec) or []):
        train, fitted_on = read_split(spec, "train", ReadOptions(on_error="skip", verify_images=False)), f"`{spec}` split train"
    if train is None:
        train, fitted_on = ds, "the evaluated images"
        note = "no training split known: the baselines are fitted on the evaluated images themselves, which flatters them"
    grounding = any(s.phrase for s in ds)
    return fit_and_score(train.samples, ds.samples, None if grounding else ds.classes, fitted_on, note)


def settle_classes(settings: Any, dataset: DetectionDataset, name: str) -> Any:
    """``settings`` for scoring ``dataset``: grounding when its samples carry phrases; else a trained
    model keeps the classes (so the prompt) it was trained with, a bare one prompts with the dataset's."""
    if any(s.phrase for s in dataset):
        settings.task = "ground"
    else:
        if not settings.classes:
            settings.classes = list(dataset.classes)
        elif list(settings.classes) != list(dataset.classes):
            print(f"[vlmdet] note: {name} was trained to detect {settings.classes}; the dataset lists {dataset.classes}. "
                  "Prompting with the trained classes.", flush=True)
    settings.check()
    return settings


def prepare_model(model_dir: str, dataset: DetectionDataset, family: str | None) -> tuple[Any, Any, Any]:
    """Load a model for scoring ``dataset`` (its classes settled by :func:`settle_classes`)."""
    grounding = any(s.phrase for s in dataset)
    model, processor, settings = load_for_inference(model_dir, family=family, task="ground" if grounding else None)
    return model, processor, settle_classes(settings, dataset, model_dir)


def evaluate_model(model_dir: str, dataset: DetectionDataset, batch_size: int = 8, family: str | None = None, max_new_tokens: int | None = None,
                   progress: bool = True, decoding: Decoding | None = None, confidence: str = "geometric_mean") -> ModelEval:
    model, processor, settings = prepare_model(model_dir, dataset, family)
    predictor = Predictor(model, processor, settings, batch_size=batch_size, max_new_tokens=max_new_tokens, decoding=decoding, confidence=confidence)
    preds = predictor.predict(dataset.samples, progress=progress, desc=f"eval {Path(model_dir).name}")
    return ModelEval(str(model_dir), evaluate_predictions(dataset.samples, preds, settings, confidence), preds)


def evaluate_endpoint(spec: EndpointSpec, dataset: DetectionDataset, base: Any, generation_base: Any, out: Path, max_new_tokens: int | None = None,
                      decoding: Decoding | None = None, confidence: str = "geometric_mean",
                      name: str | None = None, processor: Any = None) -> tuple[ModelEval | None, list[Failure], dict[str, Any]]:
    """Score the served model on ``dataset`` (its column: ``name``, default the served model's name):
    ``(eval, failures, record)`` — ``eval`` is ``None`` when an image failed (no partial scores); the
    answers so far are cached in ``out/answers.jsonl``."""
    import copy

    settings = settle_classes(copy.deepcopy(base), dataset, spec.served_model)
    predictor = spec.predictor(settings, max_new_tokens=max_new_tokens, decoding=decoding, confidence=confidence, generation_base=generation_base,
                               cache_file=out / CACHE_FILE)
    run = predictor.predict(dataset.samples, progress=True, desc=f"eval {spec.served_model}")
    record = {**predictor.record(), "answers_cached": run.cached, "requests_sent": run.sent, "failed": len(run.failures),
              "logprobs_returned": any(p is not None and p.confidences is not None for p in run.predictions)}
    log(f"{spec.served_model} at {predictor.url}: {len(dataset) - run.cached - len(run.failures)} images answered now, {run.cached} from "
        f"the answer cache, {len(run.failures)} failed" + (f"; fields the server refused: {', '.join(predictor.dropped)}" if predictor.dropped else ""))
    if not record["logprobs_returned"]:
        log(f"{spec.served_model}: the server returned no token log-probabilities: every box scores 1.0 (constant scores; "
            "the 'ranked by confidence' rows are absent)")
    if "skip_special_tokens" in predictor.dropped and answers_need_special_tokens(settings, processor):
        record["special_tokens_lost"] = True
        log(f"WARNING: {settings.family} writes its boxes with special tokens, and this server refused skip_special_tokens=false: it strips "
            "them from the answers, so they will not parse. Serve the model with vLLM or SGLang (they take the field), or score it locally")
    if run.failures:
        return None, run.failures, record
    preds = [p for p in run.predictions if p is not None]
    return ModelEval(name or spec.served_model, evaluate_predictions(dataset.samples, preds, settings, confidence), preds), [], record


def coco_results(dataset: DetectionDataset, preds: list[Prediction]) -> list[dict[str, Any]]:
    """Detections in COCO results format, scored by confidence (1.0 where none was measured): image
    and category ids are the COCO file's own when the data came from one (``dataset.category_ids``),
    else 1..n."""
    cat = dataset.category_ids
    out = []
    for idx, (s, p) in enumerate(zip(dataset.samples, preds), start=1):
        image_id = s.meta.get("coco_image_id", idx)
        scores = p.confidences if p.confidences is not None else [1.0] * len(p.labels)
        for (x1, y1, x2, y2), label, score in zip(p.boxes, p.labels, scores):
            if label in cat:
                out.append({"image_id": image_id, "category_id": cat[label], "bbox": [x1, y1, x2 - x1, y2 - y1], "score": float(score)})
    return out


def _column_names(names: list[str]) -> list[str]:
    short = [Path(n).name or n for n in names]
    return short if len(set(short)) == len(short) else names  # two models with the same folder name: full paths


def write_dataset_outputs(out: Path, title: str, ds: DetectionDataset, evals: list[ModelEval], decoding: Decoding, confidence: str, n_images: int,
                          baselines: Baselines | None = None, served: tuple[str, dict[str, Any], str] | None = None) -> dict[str, dict]:
    """metrics.json, predictions.json, results.json, report.md/html and images/ of one dataset; the
    image-blind baselines stand beside the models (columns, ``metrics.json["baselines"]``, verdicts).
    ``served``: ``(model name, endpoint record, note)`` of a served model among ``evals``."""
    from vlmdet.report.html import gallery_items, write_html

    out.mkdir(parents=True, exist_ok=True)
    names = _column_names([e.name for e in evals])
    columns = {n: e.result.to_dict() for n, e in zip(names, evals)}
    record = {"decoding": decoding.record(), "confidence": confidence}
    extra = {served[0]: {"endpoint": served[1]}} if served else {}
    verdicts = [line for n, e in zip(names, evals) for line in [verdict(e.result.map50, baselines, n)] if line]
    (out / "metrics.json").write_text(json.dumps({**{e.name: {**e.result.to_dict(), **record, **extra.get(e.name, {})} for e in evals},
                                                  **({"baselines": baselines.to_dict(), "verdicts": verdicts} if baselines else {})}, indent=2))
    if baselines is not None:
        columns.update(baselines.columns())
    first = evals[0]
    (out / "predictions.json").write_text(json.dumps([
        {"id": s.id, "image_wh": list(s.image_wh), "text": p.text, "boxes": p.boxes.round(2).tolist(), "labels": p.labels,
         "confidences": None if p.confidences is None else [round(c, 5) for c in p.confidences], "parse_failed": p.decoded.failed}
        for s, p in zip(ds.samples, first.predictions)
    ], indent=1))
    (out / "results.json").write_text(json.dumps(coco_results(ds, first.predictions)))
    meta = {"decoding": decoding.record(), "confidence": confidence}
    lines = [f"# {title}", "", decoding_note(meta)] + (["", served[2]] if served else []) + ["", markdown_table(columns), "", SCORE_NOTE]
    if baselines is not None:
        lines += ["", baselines.describe()] + [f"**Verdict:** {v}." for v in verdicts]
    pcap = first.result.per_class_ap
    if pcap and any(v >= 0 for v in pcap.values()):
        lines += ["", f"Per-class AP@[.5:.95] ({names[0]}):", "", "| class | AP |", "| --- | ---: |"]
        lines += [f"| {k} | {'n/a' if v == -1 else f'{v:.3f}'} |" for k, v in pcap.items()]
    if first.result.confusion:
        lines += ["", f"Boxes placed right but labelled wrong ({names[0]}; true -> said: count):", ""]
        lines += [f"- {t} -> {s}: {n}" for t, row in first.result.confusion.items() for s, n in row.items()]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    write_html(out / "report.html", title, columns, gallery=gallery_items(ds.samples, {n: e.predictions for n, e in zip(names, evals)}),
               settings={"data": ds.name, "images": len(ds), "models": [e.name for e in evals], **record},
               notes=[decoding_note(meta)] + ([served[2]] if served else []) + ([baselines.describe()] + verdicts if baselines else []))
    for s, p in list(zip(ds.samples, first.predictions))[:n_images]:
        save_annotated(out / "images" / f"{Path(s.id).name.replace('#', '_').replace(':', '_')}.png",
                       gt_vs_pred(s.load_image(), s.boxes, s.labels, p.boxes, p.labels, p.confidences))
    print_table(columns, title=f"{title}")
    for v in verdicts:
        print(f"[vlmdet] {v}", flush=True)
    return columns



class EndpointIncomplete(RuntimeError):
    """Some images got no answer from the server: nothing is scored (a partial score would mislead),
    every answer is cached, and ``failed.json`` lists the images and why."""

    def __init__(self, out: Path, failures: dict[str, list[Failure]]) -> None:
        self.failures = failures
        n = sum(len(f) for f in failures.values())
        listing = [{"dataset": name, **f.to_dict()} for name, fs in failures.items() for f in fs]
        out.mkdir(parents=True, exist_ok=True)
        (out / "failed.json").write_text(json.dumps(listing, indent=1))
        first = listing[0]
        super().__init__(f"{n} image(s) got no answer from the server (first: {first['source']}: {first['error']}); nothing was scored. "
                         f"The answers received are kept in {CACHE_FILE} and the failed images listed in {out / 'failed.json'}: "
                         "run the same command again to send only the missing images")


def endpoint_record(name: str | None, record: dict[str, Any] | None) -> tuple[str, dict[str, Any], str] | None:
    """The served model's line in the outputs: its column name, its ``endpoint`` record, the report's note."""
    if name is None or record is None:
        return None
    request = ", ".join(f"{k}={v}" for k, v in record["request"].items() if k != "generation_config")
    note = (f"Served model `{record['served_model']}` at {record['url']}: request {request}"
            + (" + vlmdet's generation_config" if "generation_config" in record["request"] else "")
            + (f"; fields the server refused: {', '.join(record['dropped_fields'])}" if record["dropped_fields"] else "")
            + ("; confidences from the server's token log-probabilities." if record["logprobs_returned"]
               else "; the server returned no token log-probabilities, so its scores are constant (1.0)."))
    return name, record, note


def run_eval(
    model: str | None,
    data: str | list[str],
    split: str = "val",
    out: str | Path = "runs/eval",
    batch_size: int = 8,
    compare: str | None = None,
    max_samples: int | None = None,
    n_images: int = 8,
    family: str | None = None,
    max_new_tokens: int | None = None,
    on_bad_data: str = "raise",
    generation: dict[str, Any] | None = None,
    confidence: str = "geometric_mean",
    allow_overlap: bool = False,
    endpoint: EndpointSpec | None = None,
) -> dict[str, list[ModelEval]]:
    """Score ``model`` (and ``compare``) on each dataset of ``data``; returns ``{dataset name: [ModelEval, ...]}``.

    With ``endpoint`` the first model is the one that server serves (:mod:`vlmdet.predict.endpoint`;
    ``model`` is then ``endpoint.model`` or ``None``): the same datasets, prompts, codecs, metrics
    and reports; an image the server did not answer stops the scoring (:class:`EndpointIncomplete`)
    after every answer is cached, so the same command again sends only the missing images.

    Under ``torchrun`` / ``accelerate launch`` the images are shared out between the processes and the
    predictions gathered (see :class:`~vlmdet.predict.Predictor`); the main process writes.

    A dataset with no ``split`` of its own is split the way the model's training run split it
    (:func:`read_eval_split`); images that trained ``model`` are refused unless ``allow_overlap``."""
    from vlmdet.distributed import barrier, is_main_process, launched, state

    if launched():
        state()
        from vlmdet.distributed import world_size

        if endpoint is not None and world_size() > 1:
            raise ValueError("scoring a served model runs in one process (the server does the work; --concurrency sets the requests in "
                             "flight): drop torchrun / --num-processes")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    specs = [data] if isinstance(data, str) else list(data)
    decoding = Decoding(generation)
    local = [compare] if compare else []
    served = None
    if endpoint is not None:
        model = endpoint.model
        check_served(endpoint)
        served = endpoint_settings(endpoint, family)  # (settings, processor, generation config)
        processors = [served[1]] + [load_processor(m, family)[0] for m in local]
    else:
        if model is None:
            raise ValueError("give the model to score (--model) or a server to ask (--endpoint)")
        local = [model] + local
        processors = [load_processor(m, family)[0] for m in local]
    # the served model's column: its name, unless a local model scored beside it has that name
    served_name = None if endpoint is None else endpoint.served_model + (" (endpoint)" if endpoint.served_model in local else "")
    models = ([served_name] if served_name else []) + local
    datasets: dict[str, DetectionDataset] = {}
    baselines: dict[str, Baselines] = {}
    trained_on = training_split(model) if model else None  # read once: the overlap check and the baselines of every dataset use it
    for spec, name in zip(specs, dataset_names(specs)):
        ds = read_eval_split(model, spec, split, on_bad_data, allow_overlap, trained_on)
        if is_main_process():
            print(f"[vlmdet] {ds.report.summary()}", flush=True)
        if max_samples:
            ds = ds.subset(range(min(max_samples, len(ds))))
        for processor in processors:  # every model is scored on the same images: drop those any of them cannot take
            if processor is not None:  # a served model without a known processor: the server says what it refuses
                check_samples(ds, None, processor, on_bad_data, targets=False)
        if not len(ds):
            raise DataError(f"{spec} [{split}]: no images to evaluate")
        datasets[name] = ds
        baselines[name] = eval_baselines(spec, split, ds, trained_on)
    records: dict[str, dict[str, Any]] = {}
    evals = {}
    failures: dict[str, list[Failure]] = {}
    for name, ds in datasets.items():
        evals[name] = []
        if endpoint is not None:
            where = out / name if len(specs) > 1 else out
            done, failed, records[name] = evaluate_endpoint(endpoint, ds, served[0], served[2], where, max_new_tokens, decoding, confidence,
                                                            served_name, served[1])
            if failed:
                failures[name] = failed
                continue
            evals[name].append(done)
        evals[name] += [evaluate_model(m, ds, batch_size, family, max_new_tokens, decoding=decoding, confidence=confidence) for m in local]
    if failures:
        raise EndpointIncomplete(out, failures)

    def write() -> None:  # the main process writes every output
        if len(specs) == 1:
            (name, ds), = datasets.items()
            write_dataset_outputs(out, f"vlmdet eval: `{specs[0]}` split `{split}` ({len(ds)} images)", ds, evals[name], decoding, confidence, n_images,
                                  baselines[name], endpoint_record(served_name, records.get(name)))
            print(f"[vlmdet] wrote metrics.json, predictions.json, results.json, report.md, report.html, images/ to {out}")
            return
        per_dataset = {}
        for (name, ds), spec in zip(datasets.items(), specs):
            write_dataset_outputs(out / name, f"vlmdet eval: `{spec}` split `{split}` ({len(ds)} images)", ds, evals[name], decoding, confidence, n_images,
                                  baselines[name], endpoint_record(served_name, records.get(name)))
            per_dataset[name] = evals[name]
        summary = {}
        for k, m in enumerate(models):
            results = {name: per_dataset[name][k].result.to_dict() for name in per_dataset}
            summary[m] = {"mean": mean_result(list(results.values())), "per_dataset": results, "decoding": decoding.record(), "confidence": confidence}
            if endpoint is not None and k == 0:
                summary[m]["endpoint"] = {name: records[name] for name in per_dataset}
        (out / "metrics.json").write_text(json.dumps(summary, indent=2))
        lines = [f"# vlmdet eval: {len(specs)} datasets, split `{split}`", "", decoding_note({"decoding": decoding.record(), "confidence": confidence}), ""]
        for m in models:
            columns = {**{name: s for name, s in summary[m]["per_dataset"].items()}, "mean": summary[m]["mean"]}
            lines += [f"## {Path(m).name or m}", "", markdown_table(columns), ""]
            print_table(columns, title=f"{Path(m).name or m}: {len(specs)} datasets and their mean")
        if len(models) > 1:
            lines += ["## mean over the datasets", "", markdown_table({Path(m).name or m: summary[m]["mean"] for m in models}), ""]
        (out / "report.md").write_text("\n".join(lines) + "\n")
        print(f"[vlmdet] wrote metrics.json and report.md to {out}, and each dataset's outputs to {out}/<dataset>/")

    if is_main_process():
        write()
    barrier()  # the other processes return once the outputs are whole (vlmdet.evaluate reads metrics.json in every process)
    return evals
