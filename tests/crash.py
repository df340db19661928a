"""The crash-at-step harness the resumption tests share: interrupt a training loop mid-run."""

from __future__ import annotations

import pytest


def fit_until_crash(trainer, at_step: int) -> None:
    """Run ``trainer.fit()`` and interrupt it when the loss of step ``at_step`` is asked for.

    The interruption is a ``KeyboardInterrupt`` (what Ctrl-C or a killed job looks like to
    the loop); the checkpoints written before it stay on disk.
    """
    real_loss = trainer.loss_fn

    def crash(model, batch):
        if trainer.step == at_step:
            raise KeyboardInterrupt("simulated crash")
        return real_loss(model, batch)

    trainer.loss_fn = crash
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()
    trainer.loss_fn = real_loss
