"""GradNormCallback on its own: per-group norms, a loud warning with the cause, optional stop."""

from __future__ import annotations

import pytest
import torch
from transformers import TrainerControl, TrainerState

from vlmdet.families import get_family
from vlmdet.train.callbacks import GradNormCallback


class TwoTowers(torch.nn.Module):
    """Parameter names shaped like Qwen2.5-VL's groups: vision tower, projector, language model."""

    def __init__(self):
        super().__init__()
        self.visual = torch.nn.ModuleDict({"blocks": torch.nn.Linear(4, 4), "merger": torch.nn.Linear(4, 4)})
        self.lm = torch.nn.Linear(4, 1)

    def forward(self, x, use_vision=True):
        h = self.visual["merger"](self.visual["blocks"](x)) if use_vision else x.detach()
        return self.lm(h).sum()


def _steps(cb, model, n, use_vision):
    control = TrainerControl()
    for step in range(1, n + 1):
        model.zero_grad(set_to_none=False)
        model(torch.ones(2, 4), use_vision=use_vision).backward()
        cb.on_pre_optimizer_step(None, TrainerState(global_step=step), control, model=model)
    return control


def test_norms_per_group_reach_the_logs():
    model = TwoTowers()
    cb = GradNormCallback(get_family("qwen2_5_vl"))
    _steps(cb, model, 2, use_vision=True)
    logs = cb.pop_logs()
    assert logs["grad_norm/vision"] > 0 and logs["grad_norm/projector"] > 0 and logs["grad_norm/language"] > 0
    assert cb.pop_logs() == {}  # averaged since the last log, then reset


def test_a_group_cut_off_from_the_loss_warns_with_the_cause_and_can_stop():
    model = TwoTowers()
    warnings: list[str] = []
    cb = GradNormCallback(get_family("qwen2_5_vl"), patience=3, stop_on_failure=True, warn=warnings.append)
    control = _steps(cb, model, 2, use_vision=False)
    assert not warnings and not control.should_training_stop  # within patience: quiet
    control = _steps(cb, model, 3, use_vision=False)
    assert control.should_training_stop
    assert any("'vision'" in w and "zero gradients" in w and "Likely cause" in w for w in warnings), warnings
    assert cb.problems


def test_qlora_on_cpu_is_a_clear_error(tiny_model_dir):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: QLoRA is available here")
    from vlmdet.models.loading import load_model

    with pytest.raises(RuntimeError, match="QLoRA needs a CUDA GPU.*finetune=lora"):
        load_model(tiny_model_dir("qwen2_5_vl"), quantize_4bit=True)
