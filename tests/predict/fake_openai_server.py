"""A small OpenAI-compatible chat-completions server that misbehaves on request, for the endpoint
client's fault tests. Run as its own process (so that it can be killed for real):

    python fake_openai_server.py --port P --log requests.jsonl [--flaky K] [--broken N] [--stall S]
                                 [--stall-always] [--die-after K] [--hang-after K] [--logprobs] [--reject FIELD ...]

Every image (told apart by its data URL) gets the same valid Qwen3-VL-style answer: one box
labelled ``--label``. ``--flaky K``: each image's first K attempts get
HTTP 500. ``--broken N``: every N-th distinct image (in order of first arrival) always gets 500.
``--stall S``: each image's first attempt waits S seconds and gets no answer (``--stall-always``:
every attempt) — the client's timeout and retry are what is tested. ``--die-after K``: the process exits abruptly on the request after the K-th answer; ``--hang-after K``:
requests after the K-th answer never get one.
``--reject FIELD``: a request carrying FIELD gets 422 naming it, as ``transformers serve`` does.
Each request is logged (one JSON line: the image's hash, the attempt, the fields sent, the outcome).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ANSWER = '```json\n[\n\t{{"bbox_2d": [100, 200, 500, 600], "label": "{label}"}}\n]\n```'


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--log", required=True)
    ap.add_argument("--model", default="fake")
    ap.add_argument("--label", default="circle")
    ap.add_argument("--flaky", type=int, default=0)
    ap.add_argument("--broken", type=int, default=0)
    ap.add_argument("--stall", type=float, default=0.0)
    ap.add_argument("--stall-always", action="store_true")
    ap.add_argument("--die-after", type=int, default=0)
    ap.add_argument("--hang-after", type=int, default=0)
    ap.add_argument("--logprobs", action="store_true")
    ap.add_argument("--reject", action="append", default=[])
    args = ap.parse_args()
    lock = threading.RLock()  # log() takes it too, also from inside the counting block
    attempts: dict[str, int] = {}
    order: list[str] = []
    answered = [0]  # answers decided (reserved)
    sent = [0]  # answers written whole to the socket

    def log(entry: dict) -> None:
        with lock, open(args.log, "a") as f:
            f.write(json.dumps(entry) + "\n")

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a):  # quiet
            pass

        def _send(self, code: int, body: dict) -> None:
            raw = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def do_GET(self):
            if self.path.rstrip("/") == "/v1/models":
                self._send(200, {"object": "list", "data": [{"id": args.model, "object": "model", "owned_by": "test"}]})
            else:
                self._send(404, {"detail": "not found"})

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))))
            parts = body["messages"][0]["content"]
            url = next(p["image_url"]["url"] for p in parts if p["type"] == "image_url")
            entry_prompt = next(p["text"] for p in parts if p["type"] == "text")
            image = hashlib.sha256(url.encode()).hexdigest()[:16]
            rejected = [f for f in args.reject if f in body]
            if rejected:  # refused before it counts as an attempt at the image
                log({"image": image, "attempt": 0, "fields": sorted(body), "outcome": 422})
                return self._send(422, {"detail": f"Unexpected fields in the request: {set(rejected)}"})
            with lock:
                if image not in attempts:
                    order.append(image)
                attempts[image] = attempt = attempts.get(image, 0) + 1
                index = order.index(image) + 1
            entry = {"image": image, "attempt": attempt, "fields": sorted(body), "model": body.get("model"), "prompt": entry_prompt}
            if body.get("model") != args.model:
                log({**entry, "outcome": 404})
                return self._send(404, {"error": {"message": f"model {body.get('model')!r} not found", "type": "invalid_request_error"}})
            if attempt <= args.flaky or (args.broken and index % args.broken == 0):
                log({**entry, "outcome": 500, "t": time.time()})
                return self._send(500, {"error": {"message": "internal error (injected)", "type": "server_error"}})
            if args.hang_after and answered[0] >= args.hang_after:
                log({**entry, "outcome": "hung", "t": time.time()})
                time.sleep(3600)  # never answers: the client is interrupted meanwhile
                return
            if args.stall and (args.stall_always or attempt == 1):
                log({**entry, "outcome": "stalled", "t": time.time()})
                time.sleep(args.stall)
                return  # the client gave up long ago: nothing to answer
            text = ANSWER.format(label=args.label)
            choice = {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}, "logprobs": None}
            if args.logprobs and body.get("logprobs"):
                pieces = [text[i : i + 3] for i in range(0, len(text), 3)]
                choice["logprobs"] = {"content": [{"token": p, "logprob": -0.1, "bytes": list(p.encode()), "top_logprobs": []} for p in pieces]}
            with lock:  # deciding and reserving the answer is one step, so that exactly K answers are ever sent
                die = bool(args.die_after) and answered[0] >= args.die_after
                if not die:
                    answered[0] += 1
            if die:
                log({"image": image, "attempt": attempt, "outcome": "killed"})
                while sent[0] < answered[0]:  # the K answers already given reach the client whole before the crash
                    time.sleep(0.01)
                os._exit(1)  # abrupt: the connection drops mid-request, as a crashed server's would
            log({**entry, "outcome": 200, "t": time.time()})
            self._send(200, {"id": f"x{answered[0]}", "object": "chat.completion", "created": int(time.time()), "model": args.model,
                             "choices": [choice], "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})
            with lock:
                sent[0] += 1

    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    print("ready", flush=True)
    sys.stdout.flush()
    server.serve_forever()


if __name__ == "__main__":
    main()
