"""Get upstream LLaVA's own Trainer, fully set up by its `train()`, without letting it train.

`region_plugin.llava.train.main` runs upstream's `train()` with our region wiring; upstream's
trainer class is swapped for a subclass whose `train()` hands the finished Trainer back instead
of training. Model construction, LoRA config, dtype casts, projector loading, gradient-checkpoint
input hooks, data pipeline and optimizer groups are therefore exactly upstream's (+ ours).
"""
from __future__ import annotations

from typing import List


class _Ready(Exception):
    def __init__(self, trainer):
        super().__init__("trainer ready")
        self.trainer = trainer


def prepared_trainer(argv: List[str]):
    """The LLaVATrainer (with our RegionTrainer on top when --region_layers is given) for `argv`."""
    import sys

    import llava.train.train as upstream

    from region_plugin.llava.train import main

    original = upstream.LLaVATrainer

    class HandBack(original):
        def train(self, *args, **kwargs):
            raise _Ready(self)

    upstream.LLaVATrainer = HandBack
    saved_argv = sys.argv
    try:
        rc = main(list(argv))
    except _Ready as ready:
        return ready.trainer
    finally:
        upstream.LLaVATrainer = original
        sys.argv = saved_argv
    raise RuntimeError(f"upstream train() ended (exit {rc}) before reaching Trainer.train(); argv: {argv}")


class TrainStep:
    """One optimizer step as HF Trainer's inner loop takes it, on a fixed batch.

    Gradient checkpointing is switched on and model/optimizer go through the Trainer's
    accelerator (which adds bf16 autocast), as `Trainer.train()` would do before its first step;
    each call is `training_step` (forward + backward) + gradient clipping + optimizer step + zero_grad.
    """

    def __init__(self, trainer, batch: dict):
        self.trainer = trainer
        args = trainer.args
        model = trainer.model
        if args.gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=args.gradient_checkpointing_kwargs)
        trainer.create_optimizer()
        self.model, self.optimizer = trainer.accelerator.prepare(model, trainer.optimizer)
        self.batch = trainer._prepare_inputs(batch)
        self.max_grad_norm = args.max_grad_norm

    def __call__(self):
        loss = self.trainer.training_step(self.model, self.batch)
        if self.max_grad_norm:
            self.trainer.accelerator.clip_grad_norm_(self.model.parameters(), self.max_grad_norm)
        self.optimizer.step()
        self.model.zero_grad()
        return loss

    @property
    def optimizer_state(self) -> dict:
        return getattr(self.optimizer, "optimizer", self.optimizer).state
