"""Evaluation speed: batched eval against a per-image loop, and generate() against a bare forward loop.

    python benchmarks/bench_eval.py                       # the demo model if runs/demo holds it, else the demo's tiny model
    python benchmarks/bench_eval.py --model DIR --images 100 --batch-size 50

Both comparisons run their baseline in the same process, on the same model and images, and print
ratios (medians of ``--repeats`` runs after a warm-up run):

1. ``vlmdet eval``'s predictor with ``--batch-size`` images per ``generate`` call vs the same
   predictor one image at a time — images from disk, decoding, confidences and metrics included
   in both;
2. the predictor's generation of one batch vs a bare greedy loop over the model's ``forward``
   with the KV cache (prefill once, then one token per step, arg-max, no ``generate()``), both
   writing the same number of new tokens on the same batch: the predictor's overhead per token.
   The predictor's time is also split into preparing the inputs (processor), ``generate`` and
   turning tokens into boxes and confidences;
3. the same model served by ``transformers serve`` (a subprocess on 127.0.0.1, float32 as vlmdet
   loads it on CPU) and scored through vlmdet's endpoint client (``vlmdet eval --endpoint``: PNG
   data URLs, greedy request, no answer cache) at 1 and at ``--concurrency`` requests in flight, vs
   the local predictor on the same images — one image at a time and batched (``--no-serve`` skips it).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

OUT = Path("runs/bench")


def _model_and_data(args):
    from vlmdet.run import data_source, model_source
    from vlmdet.train.config import load_config

    cfg = load_config("demo", [f"output_dir={OUT / 'eval-model'}"])
    data = data_source(cfg, OUT / "eval-model")
    if args.model:
        return args.model, data, cfg.max_pixels
    if (Path("runs/demo") / "vlmdet.json").is_file():
        return "runs/demo", data, cfg.max_pixels
    return model_source(cfg, OUT / "eval-model"), data, cfg.max_pixels


def timed(fn, repeats: int) -> tuple[float, object]:
    fn()  # warm-up: first calls pay for lazy initialisation (kernels, tokenizer caches)
    times, result = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def bare_greedy(model, inputs: dict, steps: int, banned: set[int]):
    """Prefill, then one token per step with the KV cache: the least a greedy decoder can do — the
    model's forward on the new token only, its cache, the running attention mask and positions
    (the model's own initial positions, Qwen-VL's 3-D ones included, then +1 per step). No logits
    processors, stopping criteria or generation config; logits only for the last position. The end
    tokens (``banned``) are masked so that every row writes ``steps`` tokens, as ``min_new_tokens``
    makes generate() do."""
    import torch

    ban = torch.tensor(sorted(banned))

    def pick(logits):
        logits = logits.clone()
        logits[:, ban] = float("-inf")
        return logits.argmax(-1, keepdim=True)

    with torch.no_grad():
        positions = model._prepare_position_ids_for_generation(inputs["input_ids"], dict(inputs))
        out = model(**inputs, position_ids=positions, use_cache=True, logits_to_keep=1)
        cache, mask, last = out.get("cache") or out.get("past_key_values"), inputs["attention_mask"], positions[..., -1:]
        per_token = {k: torch.zeros((len(mask), 1), dtype=v.dtype) for k, v in inputs.items() if k in ("mm_token_type_ids", "token_type_ids")}
        token = pick(out.logits[:, -1])
        tokens = [token]
        for _ in range(steps - 1):
            mask, last = torch.cat([mask, torch.ones_like(token)], 1), last + 1
            out = model(input_ids=token, attention_mask=mask, cache=cache, position_ids=last, use_cache=True, logits_to_keep=1, **per_token)
            cache = out.get("cache") or out.get("past_key_values")
            token = pick(out.logits[:, -1])
            tokens.append(token)
    return torch.cat(tokens, dim=1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None)
    p.add_argument("--images", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=50)
    p.add_argument("--tokens", type=int, default=48, help="new tokens per answer in the generate-vs-bare comparison")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--concurrency", type=int, default=8, help="requests in flight in the served-model comparison")
    p.add_argument("--no-serve", action="store_true", help="skip the comparison against `transformers serve`")
    args = p.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)

    import torch

    from vlmdet.data.readers import open_dataset
    from vlmdet.evaluate import prepare_model
    from vlmdet.predict import Predictor, evaluate_predictions
    from vlmdet.predict.decoding import Decoding

    model_dir, data, max_pixels = _model_and_data(args)
    ds = open_dataset(data, "val").subset(range(args.images))
    model, processor, settings = prepare_model(model_dir, ds, None)
    if max_pixels and not (Path(model_dir) / "vlmdet.json").is_file():
        from vlmdet.models.loading import set_max_pixels

        set_max_pixels(processor, max_pixels)
    torch.set_num_threads(torch.get_num_threads())
    print(f"model {model_dir}, {len(ds)} images of {data} [val], {torch.get_num_threads()} threads")

    # 1. batched vs one image at a time (images from disk each time: nothing cached between runs)
    def run(bs: int):
        preds = Predictor(model, processor, settings, batch_size=bs).predict(ds.samples)
        return evaluate_predictions(ds.samples, preds, settings)

    batched, r_batched = timed(lambda: run(args.batch_size), args.repeats)
    single, r_single = timed(lambda: run(1), max(1, args.repeats - 2))
    same = r_batched.map50 == r_single.map50 and r_batched.n_pred == r_single.n_pred
    print(f"\n1. eval of {len(ds)} images: batch {args.batch_size} {batched:.2f} s, one at a time {single:.2f} s -> {single / batched:.1f}x "
          f"(same answers: {same}; mAP50 {r_batched.map50:.3f})")

    # 2. the predictor's generation vs a bare greedy forward loop with the KV cache, same batch, same length
    samples = ds.samples[: args.batch_size]
    images = [s.load_image() for s in samples]
    forced = Decoding({"min_new_tokens": args.tokens, "max_new_tokens": args.tokens})  # every row writes exactly --tokens
    predictor = Predictor(model, processor, settings, batch_size=len(samples), decoding=forced)
    prompts = [predictor._prompt_text(s) for s in samples]

    def prepare():
        inputs = processor(images=[[im] for im in images], text=prompts, padding=True, padding_side="left", return_tensors="pt")
        return {k: v for k, v in inputs.items() if isinstance(v, torch.Tensor)}

    inputs = prepare()
    t_prepare, _ = timed(prepare, args.repeats)
    t_ours, answers = timed(lambda: predictor.generate_answers(samples, images), args.repeats)
    t_bare, bare_tokens = timed(lambda: bare_greedy(model, inputs, args.tokens, predictor._end_ids), args.repeats)
    with forced.applied(model, args.tokens) as config:
        t_generate, gen = timed(lambda: model.generate(**inputs, generation_config=config), args.repeats)
    gen_tokens = gen[:, inputs["input_ids"].shape[1]:]
    agree = torch.equal(gen_tokens[:, : bare_tokens.shape[1]], bare_tokens)
    t_post = max(0.0, t_ours - t_prepare - t_generate)
    n_tokens = len(samples) * args.tokens
    print(f"\n2. {len(samples)} answers x {args.tokens} new tokens (greedy, the same tokens: {agree})")
    print(f"   bare forward loop with KV cache     {t_bare:.3f} s  {1000 * t_bare / n_tokens:.2f} ms/token  1.00x")
    print(f"   model.generate (vlmdet's config)    {t_generate:.3f} s  {1000 * t_generate / n_tokens:.2f} ms/token  {t_generate / t_bare:.2f}x")
    print(f"   vlmdet predictor, whole batch       {t_ours:.3f} s  {1000 * t_ours / n_tokens:.2f} ms/token  {t_ours / t_bare:.2f}x"
          f"  (inputs {t_prepare:.3f} s, generate {t_generate:.3f} s, tokens -> boxes {t_post:.3f} s)")
    result = {"batched_s": batched, "single_s": single, "batched_speedup": single / batched, "bare_s": t_bare, "generate_s": t_generate,
              "predictor_s": t_ours, "prepare_s": t_prepare, "post_s": t_post, "predictor_over_bare": t_ours / t_bare,
              "generate_over_bare": t_generate / t_bare, "same_tokens": agree, "images": len(ds), "batch_size": args.batch_size, "tokens": args.tokens}
    if not args.no_serve:
        result.update(served_vs_local(model_dir, ds, model, processor, settings, args, single, batched, r_batched))
    (OUT / "eval-speed.json").write_text(json.dumps(result, indent=2))


def served_vs_local(model_dir, ds, model, processor, settings, args, local_single: float, local_batched: float, r_local) -> dict:
    """Section 3: the endpoint client against ``transformers serve`` of the same model, same images."""
    import shutil
    import socket
    import subprocess
    import sys

    from vlmdet.predict import Predictor, evaluate_predictions
    from vlmdet.predict.endpoint import EndpointPredictor, EndpointSpec, endpoint_settings

    exe = Path(sys.executable).with_name("transformers")
    if not exe.is_file():
        print("\n3. skipped: no `transformers` CLI (pip install 'transformers[serving]')")
        return {}
    served_dir = Path(model_dir)
    if (served_dir / "vlmdet.json").is_file():  # a run folder: serve its export, as a user would
        from vlmdet.export import export_model

        served_dir = Path(export_model(model_dir, OUT / "served-export", merge=(served_dir / "adapter_config.json").is_file(), dtype="float32",
                                       overwrite=True))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [str(exe), "serve", str(served_dir), "--host", "127.0.0.1", "--port", str(port), "--device", "cpu", "--dtype", "float32"]
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 300
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                if time.time() > deadline or server.poll() is not None:
                    raise RuntimeError(f"transformers serve did not start: {' '.join(cmd)}")
                time.sleep(0.5)
        spec = EndpointSpec(f"http://127.0.0.1:{port}/v1", str(served_dir), model=str(served_dir))
        ep_settings, _, generation_base = endpoint_settings(spec, settings.family)
        ep_settings.classes = list(settings.classes)
        figures = {}
        local_preds = Predictor(model, processor, settings, batch_size=args.batch_size).predict(ds.samples)
        for n in (1, args.concurrency):
            def ask(n=n):
                client = EndpointPredictor(spec.url, spec.served_model, ep_settings, concurrency=n, generation_base=generation_base)
                return client.predict(ds.samples)

            t, run = timed(ask, max(1, args.repeats - 2))
            same = not run.failures and [p.text for p in run.predictions] == [p.text for p in local_preds]
            r = evaluate_predictions(ds.samples, [p for p in run.predictions if p is not None], ep_settings) if not run.failures else None
            figures[n] = (t, same, r)
        print(f"\n3. the same model behind `transformers serve` (float32, CPU), {len(ds)} images, vlmdet's endpoint client:")
        print(f"   {f'local predictor, batch {args.batch_size}':<36}{local_batched:.2f} s  1.00x")
        print(f"   {'local predictor, one at a time':<36}{local_single:.2f} s  {local_single / local_batched:.2f}x")
        for n, (t, same, r) in figures.items():
            print(f"   {f'endpoint, {n} request(s) in flight':<36}{t:.2f} s  {t / local_batched:.2f}x  ({len(ds) / t:.1f} img/s; same answers "
                  f"as local: {same}; mAP50 {r.map50 if r else float('nan'):.3f} vs {r_local.map50:.3f})")
        return {f"endpoint_{n}_s": t for n, (t, _, _) in figures.items()} | {
            f"endpoint_{n}_over_local_batched": t / local_batched for n, (t, _, _) in figures.items()} | {
            f"endpoint_{n}_same_answers": same for n, (_, same, _) in figures.items()}
    finally:
        server.kill()
        server.wait()
        shutil.rmtree(OUT / "served-export", ignore_errors=True)


if __name__ == "__main__":
    main()
