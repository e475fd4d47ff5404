"""Shared fixtures: offline tiny models and a small synthetic dataset, built once per session."""

from __future__ import annotations

import os
import signal

os.environ["HF_HUB_OFFLINE"] = "1"  # the suite must never touch a hub
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if os.environ.get("PYTEST_XDIST_WORKER"):  # one worker per core: a second thread pool per worker only thrashes (measured)
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"  # also for the CLI and launcher processes tests start
    import torch

    torch.set_num_threads(1)

import pytest


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """``tiny_model_dir(family)`` -> folder of an offline tiny model, cached for the session."""
    from vlmdet.models.tiny import build_tiny_model

    cache: dict[str, object] = {}

    def get(family: str = "qwen2_5_vl"):
        if family not in cache:
            cache[family] = build_tiny_model(family, tmp_path_factory.mktemp(f"tiny_{family}"))
        return cache[family]

    return get


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory):
    """A small synthetic COCO dataset (train 24 / val 8 / test 8), seed 3."""
    from vlmdet.data.synth import write_synthetic_coco

    return write_synthetic_coco(tmp_path_factory.mktemp("synth"), seed=3, splits={"train": 24, "val": 8, "test": 8})


FAST_TRAIN = [
    "finetune=full",
    "learning_rate=2e-3",
    "warmup_steps=0",
    "per_device_train_batch_size=8",
    "gradient_checkpointing=false",
    "logging_steps=5",
    "eval.max_samples=4",
    "eval.batch_size=4",
]


@pytest.fixture(scope="session")
def short_run(tmp_path_factory, tiny_model_dir, synth_dir):
    """A 30-step full fine-tune of the tiny Qwen2.5-VL on the synthetic set (TrainResult)."""
    from vlmdet.train.config import load_config
    from vlmdet.train.recipe import train

    out = tmp_path_factory.mktemp("short_run")
    cfg = load_config(
        None,
        [f"model={tiny_model_dir('qwen2_5_vl')}", f"data={synth_dir}", f"output_dir={out}", "max_steps=30",
         "eval_steps=30", "eval_on_start=true", "save_steps=1000", *FAST_TRAIN],
    )
    return train(cfg)


@pytest.fixture
def answers(monkeypatch):
    """Models loaded through vlmdet answer what the test registers (see tests/answering.py)."""
    import vlmdet.models.loading as loading
    from tests.answering import AnswerBook

    book = AnswerBook()
    real = loading.load_model

    def load_model(model_id, *args, **kwargs):
        model, processor, family = real(model_id, *args, **kwargs)
        return book.wrap(str(model_id), model, processor), processor, family

    monkeypatch.setattr(loading, "load_model", load_model)
    return book


def as_a_terminal_starts_it() -> None:
    """``preexec_fn`` for a process a test interrupts with SIGINT: Ctrl-C at its default and unblocked, as a
    terminal starts a command. An ignored or blocked SIGINT is inherited through fork and exec, and a test
    runner may hold one — a script's background job (`pytest &` in a non-interactive shell starts with SIGINT
    and SIGQUIT ignored, as POSIX says), mutmut's fork server: the process would rightly ignore the test's
    Ctrl-C and run on. That was the "hang" of the Ctrl-C training test in whole-suite runs (reproduced with
    `trap '' INT` before pytest; it never came from an earlier test)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGINT])


def _ctrl_c_state() -> tuple[object, bool]:
    """SIGINT's handler and whether the calling thread blocks it: both pass to every process a test starts."""
    return signal.getsignal(signal.SIGINT), signal.SIGINT in signal.pthread_sigmask(signal.SIG_BLOCK, [])


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    """A test that leaves SIGINT ignored or blocked in the test process makes every process started after it
    deaf to Ctrl-C (an ignored or blocked signal is inherited through fork and exec): fail it by name, and
    put Ctrl-C back so the tests after it see a terminal's state."""
    before = _ctrl_c_state()
    try:
        return (yield)
    finally:
        _check_ctrl_c(before)


def _check_ctrl_c(before: tuple[object, bool]) -> None:
    after = _ctrl_c_state()
    if after != before and (after[0] == signal.SIG_IGN or after[1]):
        signal.signal(signal.SIGINT, before[0])
        if after[1] and not before[1]:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGINT])
        pytest.fail(f"this test left SIGINT {'ignored' if after[0] == signal.SIG_IGN else 'blocked'} in the test process "
                    f"(was {before}); every process started after it would ignore Ctrl-C", pytrace=False)


# The longest tests (10-35 s each on 2 cores: several processes, or a training run of 100 steps), from
# `pytest --durations 0`. They run first, so that the xdist workers end the suite on short tests and
# finish together instead of one waiting on a 35 s test that the schedule left for last.
LONGEST_FIRST = (
    "tests/distributed/test_processes.py::",
    "tests/predict/test_endpoint.py::test_transformers_serve_scores_equal_local_eval",
    "tests/families/test_end_to_end.py::test_short_run",
    "tests/train/test_rl.py::test_a_killed_rl_run",
    "tests/train/test_train_run.py::test_resume_after_a_killed_run",
    "tests/test_notebook.py::",
    "tests/test_examples.py::",
    "tests/robustness/test_runs.py::test_ctrl_c",
    "tests/predict/test_endpoint.py::test_ctrl_c",
)


def pytest_collection_modifyitems(config, items):
    items.sort(key=lambda item: not item.nodeid.startswith(LONGEST_FIRST))  # stable: the order within each group is kept
