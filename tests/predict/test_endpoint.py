"""``vlmdet eval --endpoint`` and ``Detector.from_endpoint``: a served model scored like a local one.

Faults come from a small OpenAI-compatible server run as its own process (fake_openai_server.py):
HTTP 500s, requests that stall past the timeout, a process killed mid-run and started again. The
parity tests serve a tiny trained model's export with the real ``transformers serve`` and check the
scores equal local ``vlmdet eval`` of the same folder.
"""

from __future__ import annotations

import json
import math
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import as_a_terminal_starts_it
from vlmdet.cli import main

pytest.importorskip("openai", reason="the endpoint client needs the OpenAI client: pip install 'vlmdet[serve]'")

FAKE = Path(__file__).with_name("fake_openai_server.py")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One server process on 127.0.0.1; ``requests()`` reads its request log."""

    def __init__(self, cmd: list[str], port: int, log: Path | None, wait_s: float = 30.0) -> None:
        self.port, self.log = port, log
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.time() + wait_s
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.proc.stdout.read()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"server on port {port} did not start within {wait_s} s")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def requests(self) -> list[dict]:
        if self.log is None or not self.log.is_file():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)


@pytest.fixture
def fake(tmp_path):
    """``fake(*options, port=None)`` starts the misbehaving server; every one started is stopped."""
    started = []

    def start(*options: str, port: int | None = None) -> Server:
        port = port or free_port()
        log = tmp_path / f"requests-{port}-{len(started)}.jsonl"
        server = Server([sys.executable, str(FAKE), "--port", str(port), "--log", str(log), *options], port, log)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def _eval(server_url: str, data: Path, out: Path, *extra: str, model: str = "fake") -> int:
    return main(["eval", "--endpoint", server_url, "--served-model", model, "--family", "qwen3_vl", "--data", str(data), "--split", "val",
                 "--out", str(out), *extra])


def _expected_box(wh):
    """The fake server's answer [100, 200, 500, 600] (Qwen3-VL: relative 0-1000) in pixels."""
    from vlmdet.rows import TaskSettings

    settings = TaskSettings(family="qwen3_vl", classes=["circle", "square", "triangle", "star"])
    return settings.decode('```json\n[{"bbox_2d": [100, 200, 500, 600], "label": "circle"}]\n```', wh).boxes[0]


def test_flaky_500s_are_retried_refused_fields_dropped_and_every_image_scored(fake, synth_dir, tmp_path):
    server = fake("--flaky", "2", "--reject", "skip_special_tokens")
    out = tmp_path / "eval"
    assert _eval(server.url, synth_dir, out, "--max-retries", "3") == 0
    metrics = json.loads((out / "metrics.json").read_text())
    record = metrics["fake"]["endpoint"]
    assert record["failed"] == 0 and record["requests_sent"] == 8 and record["answers_cached"] == 0
    assert record["dropped_fields"] == ["skip_special_tokens"] and "skip_special_tokens" not in record["request"]
    assert record["request"]["temperature"] == 0.0 and record["request"]["logprobs"] is True
    assert not record["logprobs_returned"] and not metrics["fake"].get("by_score")
    log = server.requests()
    images = {r["image"] for r in log}
    assert len(images) == 8
    for image in images:  # each image: two 500s, then the answer (a 422 for the refused field on the very first request only)
        outcomes = [r["outcome"] for r in log if r["image"] == image and r["outcome"] != 422]
        assert outcomes == [500, 500, 200], outcomes
    assert [r["outcome"] for r in log].count(422) == 1
    assert all("skip_special_tokens" not in r["fields"] for r in log if r["outcome"] != 422)
    preds = json.loads((out / "predictions.json").read_text())
    for p in preds:
        np.testing.assert_allclose(p["boxes"][0], np.round(_expected_box(tuple(p["image_wh"])), 2), atol=0.01)
        assert p["labels"] == ["circle"] and p["confidences"] is None
    assert "no token log-probabilities" in (out / "report.md").read_text()


def test_images_never_answered_are_listed_not_scored_and_a_rerun_sends_only_them(fake, synth_dir, tmp_path, capsys):
    port = free_port()
    server = fake("--broken", "3", port=port)
    out = tmp_path / "eval"
    assert _eval(server.url, synth_dir, out, "--max-retries", "1", "--concurrency", "1") != 0
    err = capsys.readouterr().err
    assert "2 image(s) got no answer" in err and "run the same command again" in err
    failed = json.loads((out / "failed.json").read_text())
    assert len(failed) == 2 and all(f["error"].startswith("HTTP 500 after 1 retries") for f in failed)
    assert not (out / "metrics.json").exists()  # never scored as empty answers
    assert len((out / "answers.jsonl").read_text().splitlines()) == 6
    server.stop()

    healthy = fake(port=port)
    assert _eval(healthy.url, synth_dir, out) == 0
    sent = healthy.requests()
    assert len(sent) == 2 and {r["image"] for r in sent} == {r["image"] for r in server.requests() if r["outcome"] == 500}
    record = json.loads((out / "metrics.json").read_text())["fake"]["endpoint"]
    assert record["answers_cached"] == 6 and record["requests_sent"] == 2 and record["failed"] == 0


def test_a_request_that_stalls_past_the_timeout_is_retried_then_failed(fake, synth_dir, tmp_path, capsys):
    server = fake("--stall", "5")  # the first attempt of each image stalls
    out = tmp_path / "once"
    assert _eval(server.url, synth_dir, out, "--request-timeout", "1.5", "--max-retries", "3", "--concurrency", "8") == 0
    log = server.requests()
    outcomes = {image: [r["outcome"] for r in sorted(log, key=lambda r: r["attempt"]) if r["image"] == image] for image in {r["image"] for r in log}}
    assert len(outcomes) == 8 and all(o[:2] == ["stalled", 200] for o in outcomes.values()), outcomes  # each first attempt timed out, the retry answered
    assert json.loads((out / "metrics.json").read_text())["fake"]["endpoint"]["failed"] == 0

    always = fake("--stall", "3", "--stall-always")
    out = tmp_path / "always"
    assert _eval(always.url, synth_dir, out, "--request-timeout", "0.5", "--max-retries", "1", "--concurrency", "8", "--max-samples", "2") != 0
    failed = json.loads((out / "failed.json").read_text())
    assert len(failed) == 2 and all("no answer within the 0.5 s timeout (1 retries)" in f["error"] for f in failed)


def test_a_server_killed_mid_run_then_restarted_gets_only_the_missing_images(fake, synth_dir, tmp_path):
    port = free_port()
    server = fake("--die-after", "3", port=port)
    out = tmp_path / "eval"
    assert _eval(server.url, synth_dir, out, "--max-retries", "1", "--concurrency", "2") != 0
    assert server.proc.wait(timeout=10) == 1  # the process really died
    answered = [json.loads(line)["key"] for line in (out / "answers.jsonl").read_text().splitlines()]
    assert len(answered) == 3
    failed = json.loads((out / "failed.json").read_text())
    assert len(failed) == 5 and all("connection failed" in f["error"] for f in failed)

    again = fake(port=port)
    assert _eval(again.url, synth_dir, out) == 0
    first = {r["image"] for r in server.requests() if r["outcome"] == 200}
    resent = [r["image"] for r in again.requests()]
    assert len(resent) == 5 and not first & set(resent)
    metrics = json.loads((out / "metrics.json").read_text())["fake"]
    assert metrics["n_images"] == 8 and metrics["endpoint"]["answers_cached"] == 3


def test_ctrl_c_keeps_every_answer_and_the_rerun_sends_only_the_rest(fake, synth_dir, tmp_path):
    import os
    import signal

    port = free_port()
    server = fake("--hang-after", "3", port=port)
    out = tmp_path / "eval"
    cmd = [sys.executable, "-m", "vlmdet", "eval", "--endpoint", server.url, "--served-model", "fake", "--family", "qwen3_vl", "--data",
           str(synth_dir), "--split", "val", "--out", str(out), "--concurrency", "2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"}, preexec_fn=as_a_terminal_starts_it)
    deadline = time.time() + 120
    while sum(r["outcome"] == "hung" for r in server.requests()) < 2:  # 3 answered, both slots waiting on the server
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGINT)  # a terminal's Ctrl-C
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "interrupted" in stderr and "Traceback" not in stderr, stderr[-2000:]
    assert len((out / "answers.jsonl").read_text().splitlines()) == 3
    server.stop()
    again = fake(port=port)
    assert _eval(again.url, synth_dir, out) == 0
    assert len(again.requests()) == 5
    assert json.loads((out / "metrics.json").read_text())["fake"]["endpoint"]["answers_cached"] == 3


def test_logprobs_become_box_confidences_through_the_python_api(fake, synth_dir, tmp_path):
    import vlmdet

    server = fake("--logprobs")
    out = tmp_path / "eval"
    result = vlmdet.evaluate(None, synth_dir, family="qwen3_vl", max_samples=3, out=out, endpoint={"url": server.url, "served_model": "fake"})
    metrics = result.metrics["fake"]
    assert metrics["endpoint"]["logprobs_returned"] and "geometric_mean" in metrics["by_score"]
    for p in json.loads((out / "predictions.json").read_text()):
        assert p["confidences"] == [round(math.exp(-0.1), 5)]
    assert "confidences from the server's token log-probabilities" in (out / "report.md").read_text()
    server.stop()
    with pytest.raises(RuntimeError, match="no OpenAI-compatible server answers"):
        vlmdet.evaluate(None, synth_dir, family="qwen3_vl", out=out, endpoint={"url": server.url, "served_model": "fake"})


def test_an_unknown_served_model_fails_on_the_first_request(fake, synth_dir, tmp_path, capsys):
    server = fake()
    assert _eval(server.url, synth_dir, tmp_path / "eval", model="not-served") != 0
    err = capsys.readouterr()
    assert "HTTP 404" in err.err and "'not-served' not found" in err.err
    assert "lists fake, not 'not-served'" in err.out
    assert len(server.requests()) == 1  # not once per image


def test_no_server_at_the_url_says_so(synth_dir, tmp_path, capsys):
    assert _eval(f"http://127.0.0.1:{free_port()}", synth_dir, tmp_path / "eval") != 0
    assert "no OpenAI-compatible server answers at" in capsys.readouterr().err


def test_settings_that_cannot_be_known_or_sent_are_refused(synth_dir, tmp_path, capsys):
    from vlmdet.predict.endpoint import EndpointSpec, endpoint_settings

    spec = EndpointSpec("http://127.0.0.1:1/v1", "m")
    with pytest.raises(ValueError, match="cannot know that resize: give --model EXPORT_DIR"):
        endpoint_settings(spec, "qwen2_5_vl")
    with pytest.raises(ValueError, match="needs to know its family"):
        endpoint_settings(spec, None)
    from vlmdet.predict.endpoint import EndpointPredictor

    settings, _, _ = endpoint_settings(spec, "paligemma")
    with pytest.raises(ValueError, match="not a chat turn"):
        EndpointPredictor(spec.url, "m", settings)
    settings, _, _ = endpoint_settings(spec, "qwen3_vl")
    with pytest.raises(ValueError, match="needs greedy decoding"):
        from vlmdet.predict.decoding import Decoding

        EndpointPredictor(spec.url, "m", settings, decoding=Decoding({"do_sample": True}))
    with pytest.raises(ValueError, match=r"unknown confidence 'median': use one of geometric_mean, min, mean, product"):
        EndpointPredictor(spec.url, "m", settings, confidence="median")  # before any request, as the local predictor
    assert EndpointPredictor(spec.url, "m", settings, confidence="min").confidence == "min"


def test_a_server_that_strips_special_tokens_is_called_out_for_families_that_write_them(fake, synth_dir, tmp_path, tiny_model_dir, capsys):
    from vlmdet.models.loading import load_processor
    from vlmdet.predict.endpoint import answers_need_special_tokens
    from vlmdet.rows import TaskSettings

    processor, _ = load_processor(tiny_model_dir("qwen2_5_vl"))  # the Qwen-VL tokenizer: <|box_start|> is a special token
    assert answers_need_special_tokens(TaskSettings(family="qwen2_vl", classes=["cat"]), processor)
    assert not answers_need_special_tokens(TaskSettings(family="qwen2_5_vl", classes=["cat"]), processor)
    assert not answers_need_special_tokens(TaskSettings(family="qwen3_vl", classes=["cat"]))
    server = fake("--reject", "skip_special_tokens")
    out = tmp_path / "eval"
    assert main(["eval", "--endpoint", server.url, "--served-model", "fake", "--family", "qwen2_vl", "--data", str(synth_dir), "--split", "val",
                 "--out", str(out), "--max-samples", "2"]) == 0
    assert "refused skip_special_tokens=false: it strips them" in capsys.readouterr().out
    assert json.loads((out / "metrics.json").read_text())["fake"]["endpoint"]["special_tokens_lost"] is True


def test_detector_from_endpoint_returns_supervision_detections(fake, synth_dir):
    import supervision as sv

    from vlmdet import Detector
    from vlmdet.data.images import open_rgb

    server = fake("--logprobs")
    detector = Detector.from_endpoint(server.url, "fake", family="qwen3_vl", classes=["circle", "square"])
    image = open_rgb(sorted((synth_dir / "val" / "images").iterdir())[0])
    found = detector.predict(image)
    assert isinstance(found, sv.Detections) and found.data["class_name"].tolist() == ["circle"]
    np.testing.assert_allclose(found.xyxy[0], _expected_box(image.size), atol=1e-3)
    assert found.class_id.tolist() == [0] and found.confidence[0] == pytest.approx(math.exp(-0.1), abs=1e-5)
    again = detector.predict([image, image])  # the same image again: answered from the in-memory cache
    assert len(again) == 2 and len(server.requests()) == 1


# ----- parity with local eval, against the real `transformers serve` -----

@pytest.fixture(scope="module")
def exported(tiny_model_dir, synth_dir, tmp_path_factory):
    """``exported(family)``: an export of a tiny model trained until it writes boxes (cached per module)."""
    from tests.conftest import FAST_TRAIN

    made = {}

    def get(family: str) -> Path:
        if family not in made:
            root = tmp_path_factory.mktemp(f"served_{family}")
            args = [f"model={tiny_model_dir(family)}", f"data={synth_dir}", f"output_dir={root / 'run'}", "max_steps=100", "save_strategy=no",
                    *FAST_TRAIN, "eval.before=false", "eval.after=false", "eval_steps=1000"]
            assert main(["train", *args]) == 0
            assert main(["export", "--model", str(root / "run"), "--out", str(root / "export")]) == 0
            made[family] = root / "export"
        return made[family]

    return get


def _transformers_serve(export: Path) -> Server:
    pytest.importorskip("fastapi", reason="transformers serve needs its extra: pip install 'transformers[serving]'")
    exe = Path(sys.executable).with_name("transformers")
    if not exe.is_file():
        pytest.skip(f"no `transformers` CLI next to {sys.executable}")
    port = free_port()
    # --dtype float32: the dtype vlmdet loads a model with on CPU (the export is stored in bfloat16)
    cmd = [str(exe), "serve", str(export), "--host", "127.0.0.1", "--port", str(port), "--device", "cpu", "--dtype", "float32"]
    return Server(cmd, port, None, wait_s=180)


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl"])
def test_transformers_serve_scores_equal_local_eval(family, exported, synth_dir, tmp_path):
    export = exported(family)
    local, served = tmp_path / "local", tmp_path / "served"
    assert main(["eval", "--model", str(export), "--data", str(synth_dir), "--split", "val", "--out", str(local)]) == 0
    server = _transformers_serve(export)
    try:
        args = ["eval", "--endpoint", server.url, "--served-model", str(export), "--model", str(export), "--data", str(synth_dir),
                "--split", "val", "--out", str(served)]
        assert main(args) == 0
        again = tmp_path / "again"
        (again).mkdir()
        (again / "answers.jsonl").write_text((served / "answers.jsonl").read_text())
        assert main([*args[:-1], str(again)]) == 0  # every answer from the cache: no request
    finally:
        server.stop()
    a = json.loads((local / "predictions.json").read_text())
    b = json.loads((served / "predictions.json").read_text())
    assert [p["text"] for p in a] == [p["text"] for p in b]
    assert [p["boxes"] for p in a] == [p["boxes"] for p in b] and [p["labels"] for p in a] == [p["labels"] for p in b]
    assert sum(len(p["boxes"]) for p in a) > 0 and not any(p["parse_failed"] for p in a)  # the model writes boxes
    ma = json.loads((local / "metrics.json").read_text())[str(export)]
    mb = json.loads((served / "metrics.json").read_text())[str(export)]
    record = mb.pop("endpoint")
    # transformers serve returns no log-probabilities: only the confidence-ranked rows differ
    assert {k: v for k, v in ma.items() if k != "by_score"} == {k: v for k, v in mb.items() if k != "by_score"}
    assert record["dropped_fields"] == ["skip_special_tokens"] and "generation_config" in record["request"] and not record["logprobs_returned"]
    cached = json.loads((again / "metrics.json").read_text())[str(export)]["endpoint"]
    assert cached["requests_sent"] == 0 and cached["answers_cached"] == len(a)
    assert json.loads((local / "metrics.json").read_text())["baselines"] == json.loads((served / "metrics.json").read_text())["baselines"]


def test_the_cli_says_which_flags_go_together(synth_dir, capsys):
    assert main(["eval", "--data", str(synth_dir)]) == 2
    assert "give the model to score (--model DIR_OR_ID) or a server to ask (--endpoint URL --served-model NAME)" in capsys.readouterr().err
    assert main(["eval", "--endpoint", "http://127.0.0.1:1/v1", "--data", str(synth_dir)]) == 2
    assert "--endpoint needs --served-model NAME" in capsys.readouterr().err
    assert main(["eval", "--model", "somewhere", "--served-model", "x", "--data", str(synth_dir)]) == 2
    assert "--served-model and --processor go with --endpoint URL" in capsys.readouterr().err
