"""Answers from a model behind an OpenAI-compatible chat-completions server (vLLM, SGLang, TGI,
``transformers serve``, a hosted API), decoded and scored exactly as the local predictor's.

What makes the two comparable:

* **The same prompt.** The request is the user turn local prediction renders with the processor's
  chat template (:meth:`~vlmdet.rows.TaskSettings.prompt_messages`): the image, then the prompt
  text. The server applies the template once, as ``generate`` locally sees it.
* **The same pixels.** Each image goes as a lossless PNG data URL at its original size (EXIF
  orientation applied, as vlmdet reads it), so the server's own processor does the resize the
  model was trained with — and the codec is told that resize (Qwen2.5-VL answers in pixels of the
  resized image): read from the exported model's ``vlmdet.json`` / processor config, or refused.
* **The same decoding.** Greedy is asked for explicitly (``temperature 0``, ``top_p 1``, ``seed``).
  Servers that take a full generation config (``transformers serve``'s ``generation_config``)
  get vlmdet's complete one (:class:`~vlmdet.predict.decoding.Decoding`: every penalty off, the
  checkpoint's end tokens); vLLM and SGLang get ``skip_special_tokens: false`` so that box tokens
  that are special tokens survive. A field the server refuses (HTTP 400/422 naming it) is dropped
  from that request on and recorded; what was sent and dropped goes into ``metrics.json``.
* **Confidences** come from the token log-probabilities when the server returns them
  (``logprobs: true``) — the tokens of each box, as locally; otherwise every box scores 1.0 and
  the record says the scores are constant.

The client is ``openai.AsyncOpenAI``: its retries with exponential backoff cover 408/409/429/5xx,
connection errors and timeouts (``max_retries``, ``timeout``), so vlmdet does not write its own.
At most ``concurrency`` requests are in flight. Every answer is appended to a per-image cache
(``answers.jsonl``, keyed by served model, prompt, image bytes and request settings) the moment
it arrives, so a rerun after a crash, a kill or Ctrl-C sends only the images still missing. An
image whose request fails after the retries is a :class:`Failure` — counted, listed, never
scored as an empty answer.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import os
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlmdet.data.sample import Sample
from vlmdet.predict.decoding import Decoding, check_confidence, strip_answer
from vlmdet.predict.predictor import Answer, Prediction, prediction_of
from vlmdet.rows import TaskSettings

CACHE_FILE = "answers.jsonl"
# Request fields not every server knows; each is dropped (and recorded) when the server refuses it.
OPTIONAL_FIELDS = ("logprobs", "generation_config", "skip_special_tokens")


class EndpointError(RuntimeError):
    """The server cannot be used as asked (unreachable, unknown model, a request it refuses)."""


def install_hint() -> str:
    return "pip install 'vlmdet[serve]' (the OpenAI client)"


def data_url(image: Any) -> str:
    """``image`` (PIL, RGB) as a lossless PNG data URL."""
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def image_hash(image: Any) -> str:
    """A hash of ``image``'s pixels (what the server is sent), without encoding it."""
    digest = hashlib.sha256(f"{image.mode}:{image.size}".encode())
    digest.update(image.tobytes())
    return digest.hexdigest()


@dataclass
class Failure:
    """An image the server did not answer (after the client's retries)."""

    sample_id: str
    source: str
    error: str

    def to_dict(self) -> dict[str, str]:
        return {"id": self.sample_id, "source": self.source, "error": self.error}


@dataclass
class EndpointRun:
    """What one pass over the images did: predictions (``None`` for a failed image), the failures,
    how many answers came from the cache and how many requests were sent."""

    predictions: list[Prediction | None]
    failures: list[Failure] = field(default_factory=list)
    cached: int = 0
    sent: int = 0


class AnswerCache:
    """``answers.jsonl``: one JSON line per answered image, appended and flushed as each arrives. A
    line cut short by a kill is ignored when read back (its image is simply asked again)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.entries: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        if path is not None and path.is_file():
            for line in path.read_text().splitlines():
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(entry, dict) and "key" in entry and isinstance(entry.get("text"), str):
                    self.entries[entry["key"]] = entry

    def get(self, key: str) -> dict[str, Any] | None:
        return self.entries.get(key)

    def put(self, entry: dict[str, Any]) -> None:
        self.entries[entry["key"]] = entry
        if self.path is None:
            return
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a") as f:
                f.write(json.dumps(entry) + "\n")
                f.flush()
                os.fsync(f.fileno())


def logprob_spans(text: str, tokens: Sequence[tuple[str, float]] | None) -> tuple[list[tuple[int, int]], list[float] | None]:
    """Each token's characters in ``text`` and its log-probability, from the server's ``logprobs``
    (``([], None)`` when it returned none, or tokens that do not add up to the text)."""
    if not tokens:
        return [], None
    pieces = [t for t, _ in tokens]
    if "".join(pieces) != text:
        return [], None
    spans, pos = [], 0
    for piece in pieces:
        spans.append((pos, pos + len(piece)))
        pos += len(piece)
    return spans, [float(lp) for _, lp in tokens]


def _named_field(message: str, fields: Sequence[str]) -> str | None:
    for name in fields:
        if re.search(rf"\b{re.escape(name)}\b", message):
            return name
    return None


def run_coroutine(coro: Any) -> Any:
    """``asyncio.run(coro)``, also from inside a running event loop (a Jupyter cell): then in a thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


class EndpointPredictor:
    """Predictions for samples from ``served_model`` at ``url`` (an OpenAI-compatible ``/v1`` base).

    Args:
        settings: the task settings (family, codec and its resize settings, classes) — the same
            object local prediction uses, so prompt and decoding are the same code.
        api_key: sent as the bearer token (servers without auth take any; default ``"EMPTY"``).
        concurrency: requests in flight at once.
        timeout: seconds for one request before it counts as failed (and is retried).
        max_retries: retries per request (the OpenAI client's exponential backoff).
        max_new_tokens: answer budget (default ``settings.max_new_tokens``).
        decoding: vlmdet's decoding (greedy); must be greedy — a server's sampling cannot be pinned.
        generation_base: the checkpoint's own generation config, whose end/pad token ids go into the
            ``generation_config`` field; without it that field is not sent.
        cache_file: the answer cache (``None``: no cache).
        seed: the request's ``seed``.
    """

    def __init__(self, url: str, served_model: str, settings: TaskSettings, *, api_key: str | None = None, concurrency: int = 4,
                 timeout: float = 120.0, max_retries: int = 4, max_new_tokens: int | None = None, decoding: Decoding | None = None,
                 confidence: str = "geometric_mean", generation_base: Any = None, cache_file: str | Path | None = None, seed: int = 0) -> None:
        try:
            import openai  # noqa: F401
        except ImportError:
            raise ImportError(f"scoring a served model needs the OpenAI client: {install_hint()}") from None
        self.url = normalise_url(url)
        self.served_model = served_model
        self.settings = settings
        self.api_key = api_key or "EMPTY"
        self.concurrency = max(1, int(concurrency))
        self.timeout = float(timeout)
        self.max_retries = max(0, int(max_retries))
        self.max_new_tokens = int(max_new_tokens or settings.max_new_tokens)
        self.decoding = decoding or Decoding()
        if not self.decoding.greedy:
            raise ValueError("scoring a served model needs greedy decoding (a server's sampling or beam search cannot be reproduced); "
                             "drop the sampling / num_beams overrides")
        self.confidence = check_confidence(confidence)
        self.seed = int(seed)
        self.cache = AnswerCache(Path(cache_file) if cache_file else None)
        if settings.family_spec.answer_layout != "chat":
            raise ValueError(f"{settings.family}: its prompt is not a chat turn ({settings.family_spec.answer_layout} layout), which the "
                             "chat-completions API cannot carry; score it locally with vlmdet eval --model")
        self.requested = self._request_settings(generation_base)
        self.dropped: list[str] = []
        self._dropped_lock = threading.Lock()

    # ----- the request -----

    def _request_settings(self, generation_base: Any) -> dict[str, Any]:
        """Every field of the request except the messages: what is on record and keys the cache."""
        body: dict[str, Any] = {"max_tokens": self.max_new_tokens, "temperature": 0.0, "top_p": 1.0, "seed": self.seed, "logprobs": True,
                                "skip_special_tokens": False}
        if generation_base is not None:
            config = self.decoding.config_from(generation_base, self.max_new_tokens).to_diff_dict()
            config.pop("transformers_version", None)
            body["generation_config"] = json.dumps(config, sort_keys=True)
        return body

    def messages(self, sample: Sample, image_url: str) -> list[dict[str, Any]]:
        """The chat turn of ``sample``: local prediction's, with the image as a data URL."""
        out = []
        for message in self.settings.prompt_messages(sample):
            content = [{"type": "image_url", "image_url": {"url": image_url}} if part.get("type") == "image" else dict(part)
                       for part in message["content"]]
            out.append({"role": message["role"], "content": content})
        return out

    def cache_key(self, sample: Sample, image_sha: str) -> str:
        record = {"model": self.served_model, "prompt": self.settings.prompt(sample), "image": image_sha, "request": self.requested}
        return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()

    def record(self) -> dict[str, Any]:
        """What ``metrics.json`` states about the server and the requests."""
        sent = {k: v for k, v in self.requested.items() if k not in self.dropped}
        return {"url": self.url, "served_model": self.served_model, "request": sent, "dropped_fields": list(self.dropped),
                "concurrency": self.concurrency, "timeout_s": self.timeout, "max_retries": self.max_retries}

    async def _ask(self, client: Any, body: dict[str, Any]) -> Any:
        """One completion; a field the server refuses by name is dropped and the request sent again."""
        import openai

        while True:
            with self._dropped_lock:
                payload = {k: v for k, v in body.items() if k not in self.dropped}
            standard = {k: v for k, v in payload.items() if k not in ("generation_config", "skip_special_tokens")}
            extra = {k: v for k, v in payload.items() if k in ("generation_config", "skip_special_tokens")}
            try:
                return await client.chat.completions.create(**standard, extra_body=extra or None)
            except (openai.BadRequestError, openai.UnprocessableEntityError) as exc:
                name = _named_field(error_text(exc), [f for f in OPTIONAL_FIELDS if f in payload])
                if name is None:
                    raise
                with self._dropped_lock:
                    if name not in self.dropped:
                        self.dropped.append(name)

    def _answer(self, response: Any) -> tuple[str, list[list[Any]] | None]:
        choices = getattr(response, "choices", None) or []
        if not choices or getattr(choices[0].message, "content", None) is None:
            raise EndpointError(f"malformed response: no answer text in {str(response)[:200]}")
        text = choices[0].message.content
        lp = getattr(choices[0], "logprobs", None)
        content = getattr(lp, "content", None) if lp is not None else None
        tokens = [[t.token, float(t.logprob)] for t in content] if content else None
        return text, tokens

    def _prediction(self, sample: Sample, entry: dict[str, Any]) -> Prediction:
        text = entry["text"]
        spans, logprobs = logprob_spans(text, entry.get("tokens"))
        stripped, spans = strip_answer(text, spans)
        return prediction_of(self.settings, sample, Answer(stripped, spans, logprobs), self.confidence)

    # ----- the run -----

    def predict(self, samples: Sequence[Sample], images: dict[str, Any] | None = None, progress: bool = False,
                desc: str = "endpoint") -> EndpointRun:
        """Predictions for ``samples`` in their order; failed images are ``None`` in the list and
        listed in :attr:`EndpointRun.failures`."""
        return run_coroutine(self._predict(list(samples), images or {}, progress, desc))

    async def _predict(self, samples: list[Sample], images: dict[str, Any], progress: bool, desc: str) -> EndpointRun:
        import openai

        run = EndpointRun([None] * len(samples))
        todo: list[tuple[int, str]] = []
        for i, s in enumerate(samples):  # only hashes are kept: a split's data URLs could exceed the memory
            key = self.cache_key(s, image_hash(images.get(s.id) or s.load_image()))
            hit = self.cache.get(key)
            if hit is not None:
                run.predictions[i] = self._prediction(s, hit)
                run.cached += 1
            else:
                todo.append((i, key))
        if not todo:
            return run
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(todo), desc=desc, unit="img", leave=False)
        gate = asyncio.Semaphore(self.concurrency)
        client = openai.AsyncOpenAI(base_url=self.url, api_key=self.api_key, timeout=self.timeout, max_retries=self.max_retries)

        async def one(i: int, key: str) -> None:
            s = samples[i]
            async with gate:  # the image is encoded here, so at most `concurrency` are held at once
                run.sent += 1
                try:
                    url = await asyncio.to_thread(lambda: data_url(images.get(s.id) or s.load_image()))  # off the event loop
                    response = await self._ask(client, {"model": self.served_model, "messages": self.messages(s, url), **self.requested})
                    text, tokens = self._answer(response)
                except (openai.APIError, EndpointError) as exc:
                    run.failures.append(Failure(s.id, s.source or s.id, describe_error(exc, self.timeout, self.max_retries)))
                    return
                finally:
                    if bar is not None:
                        bar.update(1)
            entry = {"key": key, "id": s.id, "text": text, "tokens": tokens, "dropped": list(self.dropped)}
            self.cache.put(entry)
            run.predictions[i] = self._prediction(s, entry)

        try:
            # the first request alone: it settles which optional fields the server takes (and a
            # server that refuses everything fails once, not once per image)
            await one(*todo[0])
            if run.failures and _fatal(run.failures[0].error):
                raise EndpointError(f"{self.url}: {run.failures[0].error}")
            await asyncio.gather(*(one(*t) for t in todo[1:]))
        finally:
            if bar is not None:
                bar.close()
            await client.close()
        order = {s.id: k for k, s in enumerate(samples)}
        run.failures.sort(key=lambda f: order.get(f.sample_id, 0))
        return run


def _fatal(error: str) -> bool:
    """A failure every other image would repeat: the request itself is refused or the model unknown."""
    return error.startswith(("HTTP 400", "HTTP 401", "HTTP 403", "HTTP 404", "HTTP 422"))


def describe_error(exc: BaseException, timeout: float, retries: int) -> str:
    import openai

    if isinstance(exc, openai.APITimeoutError):
        return f"no answer within the {timeout:g} s timeout ({retries} retries)"
    if isinstance(exc, openai.APIConnectionError):
        return f"connection failed after {retries} retries ({exc.__cause__ or exc})"
    if isinstance(exc, openai.APIStatusError):
        retried = exc.status_code in (408, 409, 429) or exc.status_code >= 500  # what the OpenAI client retries
        return f"HTTP {exc.status_code}" + (f" after {retries} retries" if retried else "") + f": {error_text(exc)[:300]}"
    return str(exc)[:300]


def error_text(exc: BaseException) -> str:
    """What the server said: the OpenAI client's message keeps only ``error.message``; FastAPI servers
    (``transformers serve``, vLLM) put it under ``detail`` — both, and the raw body, are searched."""
    parts = [str(exc)]
    body = getattr(exc, "body", None)
    if body is not None:
        parts.append(body if isinstance(body, str) else json.dumps(body))
    response = getattr(exc, "response", None)
    if body is None and response is not None:
        try:
            parts.append(response.text)
        except Exception:  # a streamed or closed response: the message is all there is
            pass
    return " ".join(parts)


def normalise_url(url: str) -> str:
    """The ``/v1`` base of an OpenAI-compatible server: ``http://host:8000`` and ``.../v1`` both work."""
    url = url.rstrip("/")
    if url.endswith("/chat/completions"):
        url = url[: -len("/chat/completions")]
    if not re.search(r"/v\d+$", url):
        url += "/v1"
    return url


def served_models(url: str, api_key: str | None = None, timeout: float = 30.0) -> list[str] | None:
    """The model ids ``GET /v1/models`` lists (``None`` when the server does not list them);
    :class:`EndpointError` when nothing answers at ``url``."""
    import openai

    client = openai.OpenAI(base_url=normalise_url(url), api_key=api_key or "EMPTY", timeout=timeout, max_retries=2)
    try:
        return [m.id for m in client.models.list()]
    except openai.APIConnectionError as exc:
        raise EndpointError(f"no OpenAI-compatible server answers at {normalise_url(url)} ({exc.__cause__ or exc}): start it first "
                            "(see the README's 'Serving' section) or fix --endpoint") from None
    except openai.APIStatusError:
        return None
    finally:
        client.close()


@dataclass
class EndpointSpec:
    """A served model and how vlmdet reaches it (``vlmdet eval --endpoint``).

    ``model``: the exported folder the server serves (or its hub id): its ``vlmdet.json``, processor
    and generation config tell the prompt, the codec's resize and the end tokens. ``processor``: a
    folder or hub id to read only the processor from (a hosted model prompted without training).
    ``api_key_env``: the environment variable holding the API key."""

    url: str
    served_model: str
    model: str | None = None
    processor: str | None = None
    api_key_env: str | None = None
    concurrency: int = 4
    timeout: float = 120.0
    max_retries: int = 4

    def predictor(self, settings: TaskSettings, **kwargs: Any) -> "EndpointPredictor":
        """The :class:`EndpointPredictor` of this server for ``settings`` (``kwargs``: its other arguments)."""
        return EndpointPredictor(self.url, self.served_model, settings, api_key=self.api_key(), concurrency=self.concurrency,
                                 timeout=self.timeout, max_retries=self.max_retries, **kwargs)

    def api_key(self) -> str | None:
        if not self.api_key_env:
            return None
        key = os.environ.get(self.api_key_env)
        if not key:
            raise ValueError(f"--api-key-env {self.api_key_env}: the environment variable is not set; export it (export {self.api_key_env}=...)")
        return key


def endpoint_settings(spec: EndpointSpec, family: str | None = None, task: str = "detect") -> tuple[TaskSettings, Any, Any]:
    """``(settings, processor, generation_base)`` for scoring ``spec``: the settings from the exported
    model (``vlmdet.json``) or its processor, else from ``family``; the processor (``None`` when
    none is known) and the checkpoint's generation config (``None`` when unknown).

    The codec's resize comes from the processor config — the one the server applies when it serves
    that folder. A family that answers in pixels of the resized image (Qwen2.5-VL) without a
    processor to read the resize from is refused: its boxes could not be placed."""
    from vlmdet.models.loading import load_processor

    processor = generation_base = None
    source = spec.model or spec.processor
    settings: TaskSettings | None = None
    if source is not None:
        processor, fam = load_processor(source, family)
        fam_name = family or fam.name
        if spec.model is not None and Path(spec.model).is_dir():
            settings = TaskSettings.load(spec.model)
        if settings is None:
            settings = TaskSettings.for_model(fam_name, processor, task=task)
        else:
            if family and family != settings.family:
                raise ValueError(f"--family {family}, but {spec.model} is a {settings.family} model (vlmdet.json); drop --family")
            served = settings.family_spec.codec_settings(processor)
            if served and served != {k: settings.codec_settings.get(k) for k in served}:
                print(f"[vlmdet] WARNING: {spec.model}: vlmdet.json's codec settings {settings.codec_settings} differ from its processor config's "
                    f"{served}; the server resizes with the processor config, so boxes are read with it", flush=True)
                settings.codec_settings = {**settings.codec_settings, **served}
                settings.__dict__.pop("_codec", None)
        if spec.model is not None:
            try:
                from transformers import GenerationConfig

                generation_base = GenerationConfig.from_pretrained(spec.model)
            except (OSError, ValueError):
                generation_base = None
    else:
        if not family:
            raise ValueError("scoring a served model needs to know its family: give --model EXPORT_DIR (the folder the server serves), "
                             "--processor ID, or --family NAME")
        settings = TaskSettings(family=family, task=task)
        settings.family_spec  # an unknown family: ValueError naming the known ones
        if getattr(settings.codec, "space", None) == "resized_pixels":
            raise ValueError(f"{family} answers in pixels of the image its server resized, and without the server's processor config "
                             "vlmdet cannot know that resize: give --model EXPORT_DIR (the folder the server serves) or --processor ID "
                             "(the served model's hub id or a folder with its preprocessor_config.json)")
    if task == "ground":
        settings.task = "ground"
    return settings, processor, generation_base


def check_served(spec: EndpointSpec) -> None:
    """Fail early, with the fix, when nothing answers at ``spec.url``; say so when the server's model
    list does not name ``spec.served_model`` (some servers load models on demand: not an error)."""
    listed = served_models(spec.url, spec.api_key(), timeout=min(spec.timeout, 30.0))
    if listed and spec.served_model not in listed:
        shown = ", ".join(listed[:8]) + (", ..." if len(listed) > 8 else "")
        print(f"[vlmdet] WARNING: {normalise_url(spec.url)} lists {shown}, not {spec.served_model!r}: check --served-model "
              "(the request's `model` must be the name the server serves)", flush=True)


# Families whose answers are written with special tokens, for when no tokenizer is at hand to tell.
SPECIAL_TOKEN_FAMILIES = ("qwen2_vl",)


def answers_need_special_tokens(settings: TaskSettings, processor: Any = None) -> bool:
    """Whether ``settings``' answers contain special tokens (Qwen2-VL's ``<|box_start|>``): a server that
    decodes with ``skip_special_tokens`` (``transformers serve``) strips them, and the boxes with them.
    Told by the processor's tokenizer when there is one (a sample answer's tokens), else by family."""
    tokenizer = getattr(processor, "tokenizer", processor)
    if tokenizer is None or not hasattr(tokenizer, "decode"):
        return settings.family in SPECIAL_TOKEN_FAMILIES
    import numpy as np

    label = settings.classes[0] if settings.classes else "object"
    text = settings.codec.encode(np.array([[10.0, 10.0, 50.0, 50.0]]), [label], (100, 100))
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    # what such a server does, literally (all_special_ids does not list every token decode skips)
    return tokenizer.decode(ids, skip_special_tokens=True) != tokenizer.decode(ids, skip_special_tokens=False)
