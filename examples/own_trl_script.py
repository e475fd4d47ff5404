"""Keep your own TRL script; take vlmdet's parts into it.

Your notebook already builds a ``trl.SFTTrainer`` (and maybe a ``GRPOTrainer``). What vlmdet gets
right for you, as parts you pass to the trainers you construct:

* ``TaskSettings``   prompts, targets in the family's coordinate space, decoding back to pixels
* ``RowSource``      your samples as TRL prompt/completion rows (images decoded lazily)
* ``DetectionCollator``  completion-only labels (the prompt and image tokens are never trained)
* ``GradNormCallback``   gradient norms per group (vision / projector / language) and the alarm
                         when a group that should train receives none
* ``DetectionEvalCallback``  mAP50 / F1 / IoU on held-out images during training
* ``reward_functions`` + ``PromptSource``  box rewards for ``GRPOTrainer``
* ``Predictor`` + ``evaluate_predictions``  the same scores ``vlmdet eval`` reports (pycocotools)

Run it (offline: a tiny model and synthetic data; pass --model Qwen/Qwen2.5-VL-3B-Instruct and
--data your_coco_folder for the real thing):

    python examples/own_trl_script.py --out /tmp/own-trl --steps 60 --grpo-steps 4
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import torch
from transformers import AutoModelForImageTextToText, AutoProcessor
from trl import GRPOConfig, GRPOTrainer, SFTConfig, SFTTrainer

import vlmdet


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--model", help="a model folder or hub id (default: an offline tiny Qwen2.5-VL)")
    p.add_argument("--family", default="qwen2_5_vl")
    p.add_argument("--data", help="a dataset spec vlmdet reads (default: synthetic shapes)")
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--grpo-steps", type=int, default=0)
    args = p.parse_args(argv)

    # --- your model and data, loaded as you already do -------------------------------------------
    model_dir = args.model or vlmdet.build_tiny_model(args.family, args.out / "tiny-model")
    data = args.data or vlmdet.write_synthetic_coco(args.out / "data", seed=0, splits={"train": 48, "val": 8}, colour_by_class=True)
    train_ds, val_ds = vlmdet.open_dataset(data, "train"), vlmdet.open_dataset(data, "val")
    processor = AutoProcessor.from_pretrained(model_dir)
    model = AutoModelForImageTextToText.from_pretrained(model_dir)

    # --- vlmdet's parts ---------------------------------------------------------------------------
    settings = vlmdet.TaskSettings.for_model(args.family, processor, classes=train_ds.classes)
    settings.check()  # class names the prompt or the answer format cannot carry are refused here
    print("prompt:", settings.prompt(train_ds[0]))
    print("target:", settings.target(train_ds[0]))  # in the model's coordinate space, not the image's
    collator = vlmdet.DetectionCollator(processor, layout=settings.family_spec.answer_layout)
    grad_cb = vlmdet.GradNormCallback(settings.family_spec)
    det_cb = vlmdet.DetectionEvalCallback(val_ds.samples, settings, processor, batch_size=8, every=max(1, args.steps // 2))

    # --- a plain TRL SFTTrainer -------------------------------------------------------------------
    sft_args = SFTConfig(
        output_dir=str(args.out / "sft"), max_steps=args.steps, per_device_train_batch_size=8, learning_rate=2e-3,
        warmup_steps=0, logging_steps=10, save_strategy="no", report_to="none", max_length=None, bf16=torch.cuda.is_available(),
        remove_unused_columns=False,  # the collator needs the rows' images and messages
        dataset_kwargs={"skip_prepare_dataset": True},  # rows are built lazily; TRL must not tokenize them up front
    )
    trainer = SFTTrainer(model=model, args=sft_args, train_dataset=vlmdet.RowSource(train_ds.samples, settings).dataset(),
                         processing_class=processor, data_collator=collator, callbacks=[grad_cb, det_cb])
    before = vlmdet.evaluate_predictions(val_ds.samples, vlmdet.Predictor(model, processor, settings).predict(val_ds.samples), settings)
    trainer.train()
    after = vlmdet.evaluate_predictions(val_ds.samples, vlmdet.Predictor(model, processor, settings).predict(val_ds.samples), settings)
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    print(f"SFT: loss {losses[0]:.3f} -> {losses[-1]:.3f}; mAP50 {before.map50:.3f} -> {after.map50:.3f}; "
          f"gradient problems: {grad_cb.problems or 'none'}; eval during training: {[round(h['eval_map50'], 3) for h in det_cb.history]}")
    result = {"losses": losses, "before": before.to_dict(), "after": after.to_dict(), "eval_history": det_cb.history,
              "grad_problems": grad_cb.problems}

    # --- a plain TRL GRPOTrainer with vlmdet's box rewards ----------------------------------------
    if args.grpo_steps:
        tokenizer = processor.tokenizer
        end_ids = {t for t in (tokenizer.eos_token_id, tokenizer.pad_token_id) if t is not None}
        reward_funcs, reward_weights = vlmdet.reward_functions(train_ds.samples, settings, tokenizer, end_ids)
        rl_processor = copy.deepcopy(processor)
        rl_processor.tokenizer.padding_side = "left"  # TRL pads prompts on the left
        grpo_args = GRPOConfig(
            output_dir=str(args.out / "grpo"), max_steps=args.grpo_steps, per_device_train_batch_size=4, num_generations=4,
            max_completion_length=settings.max_new_tokens, learning_rate=1e-4, reward_weights=reward_weights, logging_steps=1,
            save_strategy="no", report_to="none", bf16=torch.cuda.is_available(), remove_unused_columns=False,  # the rewards read sample_index
        )
        grpo = GRPOTrainer(model=trainer.model, reward_funcs=reward_funcs, args=grpo_args,
                           train_dataset=vlmdet.PromptSource(train_ds.samples, settings).dataset(), processing_class=rl_processor)
        grpo.train()
        rewards = [e["reward"] for e in grpo.state.log_history if "reward" in e]
        print(f"GRPO: {args.grpo_steps} steps, mean reward per step {[round(r, 3) for r in rewards]}")
        result["rewards"] = rewards
    return result


if __name__ == "__main__":
    main()
