"""Schedules as pure functions of the step (official BYOL ``utils/schedules.py``)."""

import math


def tau_schedule(step: int, total_steps: int, tau_base: float = 0.996) -> float:
    """τ_k = 1 − (1 − τ_base)·(cos(πk/K) + 1)/2: τ_base at step 0, 1 at the last step."""
    progress = min(step, total_steps) / max(total_steps, 1)
    return float(1 - (1 - tau_base) * (math.cos(math.pi * progress) + 1) / 2)


def lr_schedule(step: int, total_steps: int, base_lr: float, warmup_steps: int = 0) -> float:
    """Linear warm-up from 0 to ``base_lr`` over ``warmup_steps``, then cosine decay to 0."""
    if step < warmup_steps:
        return float(base_lr * (step + 1) / warmup_steps)
    decay_steps = max(total_steps - warmup_steps, 1)
    progress = min(step - warmup_steps, decay_steps) / decay_steps
    return float(base_lr * (math.cos(math.pi * progress) + 1) / 2)
