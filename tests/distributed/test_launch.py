"""--num-processes builds the field's launcher command; the shipped accelerate configs are ones
accelerate reads as the engine they name; engines this machine cannot run are refused up front."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from accelerate.commands.config.config_args import load_config_from_file
from accelerate.utils import DistributedType

from vlmdet.cli import ACCELERATE_CONFIGS, launcher_command, main

CONFIGS = Path(__file__).resolve().parents[2] / "src" / "vlmdet" / "configs" / "accelerate"


@pytest.mark.parametrize("name, kind", [("ddp", DistributedType.MULTI_GPU), ("fsdp2", DistributedType.FSDP),
                                        ("zero2", DistributedType.DEEPSPEED), ("zero3", DistributedType.DEEPSPEED)])
def test_shipped_accelerate_configs_name_their_engine(name, kind):
    cfg = load_config_from_file(str(CONFIGS / f"{name}.yaml"))
    assert cfg.distributed_type == kind and not cfg.use_cpu
    if name == "fsdp2":
        assert cfg.fsdp_config["fsdp_version"] == 2 and cfg.fsdp_config["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
        assert cfg.fsdp_config["fsdp_state_dict_type"] == "FULL_STATE_DICT"  # a plain model folder at the end
    if name.startswith("zero"):
        assert cfg.deepspeed_config["zero_stage"] == int(name[-1])
    assert set(ACCELERATE_CONFIGS) == {p.stem for p in CONFIGS.glob("*.yaml")}


def test_gpu_launch_is_accelerate_with_the_named_config():
    cmd = launcher_command("train", ["--config", "c.yaml", "max_steps=5"], 4, "fsdp2", gpu=True)
    assert cmd[:5] == [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "4"]
    assert cmd[cmd.index("--config_file") + 1] == str(CONFIGS.resolve() / "fsdp2.yaml")
    assert cmd[cmd.index("-m", 3):] == ["-m", "vlmdet", "train", "--config", "c.yaml", "max_steps=5"]
    assert "--multi_gpu" in launcher_command("eval", [], 2, None, gpu=True)


def test_cpu_launch_is_torchrun_and_refuses_engines_that_need_gpus(tmp_path):
    cmd = launcher_command("eval", ["--model", "m"], 2, None, gpu=False)
    assert cmd == [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "vlmdet", "eval", "--model", "m"]
    for name in ("fsdp2", "zero2", "zero3"):
        with pytest.raises(ValueError, match=f"{name} needs GPUs"):
            launcher_command("train", [], 2, name, gpu=False)
    own = tmp_path / "mine.yaml"
    own.write_text("distributed_type: DEEPSPEED\n")
    with pytest.raises(ValueError, match="needs GPUs"):
        launcher_command("train", [], 2, str(own), gpu=False)


def test_the_refusal_is_one_line_from_the_cli(capsys):
    if __import__("torch").cuda.is_available():
        pytest.skip("this machine has a GPU: the FSDP config would run")
    assert main(["eval", "--model", "m", "--data", "d", "--num-processes", "2", "--accelerate-config", "zero3"]) == 2
    err = capsys.readouterr().err
    assert "zero3 needs GPUs" in err and "Traceback" not in err


@pytest.mark.parametrize("env, main_process", [
    ({"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "1"}, True),   # the first machine's one process
    ({"RANK": "1", "LOCAL_RANK": "0", "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "1"}, False),  # the second machine's: local rank 0 too
    ({"RANK": "3", "LOCAL_RANK": "1", "WORLD_SIZE": "4", "LOCAL_WORLD_SIZE": "2"}, False),
])
def test_only_the_global_main_process_writes_whatever_its_local_rank(env, main_process, monkeypatch):
    # two machines sharing an output folder (or two on one host, the slow test_processes.py run):
    # a "main process" by local rank would be one per machine, each writing run.json and the report
    import torch.distributed as dist

    from vlmdet import distributed

    monkeypatch.setattr(dist, "is_initialized", lambda: False)  # before the process group starts: what the launcher's environment says
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert distributed.launched()
    assert distributed.rank() == int(env["RANK"]) and distributed.world_size() == int(env["WORLD_SIZE"])
    assert distributed.is_main_process() is main_process
