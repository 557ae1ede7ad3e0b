"""Training on a time budget: a warmup-stable-decay (WSD) schedule whose length is planned from throughput.

With ``max_minutes`` set, a trainer runs ``calibration_steps`` optimizer steps, measures seconds per step,
and plans the total number of steps so that training (plus the selection evaluations still to come) ends at
the budget with the learning rate decayed to ``min_lr_ratio``. Because the stable phase does not depend on
the total, the plan is refreshed after every evaluation until the last ``decay_ratio`` of the budget's time (a
machine that got slower or faster, e.g. a shared one, moves the decay rather than cutting the run); from then
on the plan is frozen.

Without a budget the plan is simply ``epochs × steps per epoch``. The plan is part of the resume state, so
an interrupted run continues with the same schedule.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass


@dataclass
class Plan:
    total_steps: int
    warmup_steps: int
    decay_ratio: float = 0.2
    min_lr_ratio: float = 0.0
    frozen: bool = False
    budget_seconds: float = 0.0
    seconds_per_step: float = 0.0

    @property
    def decay_start(self) -> int:
        return max(self.warmup_steps, int(round(self.total_steps * (1.0 - self.decay_ratio))))

    def lr_factor(self, step: int) -> float:
        """Multiplier of the peak learning rate before optimizer step ``step`` (0-based)."""
        if step < self.warmup_steps:
            return (step + 1) / max(self.warmup_steps, 1)
        if step < self.decay_start:
            return 1.0
        span = max(self.total_steps - self.decay_start, 1)
        done = min(max(step - self.decay_start + 1, 0) / span, 1.0)
        return self.min_lr_ratio + (1.0 - self.min_lr_ratio) * (1.0 - done)

    def state(self) -> dict:
        return asdict(self)


def fixed_plan(total_steps: int, warmup_ratio: float, decay_ratio: float, min_lr_ratio: float = 0.0) -> Plan:
    """A plan for a run without a time budget (its length is known up front)."""
    total_steps = max(int(total_steps), 1)
    return Plan(total_steps=total_steps, warmup_steps=int(warmup_ratio * total_steps), decay_ratio=decay_ratio,
                min_lr_ratio=min_lr_ratio, frozen=True)


def budget_steps(budget_seconds: float, elapsed: float, step: int, seconds_per_step: float,
                 reserved_seconds: float, max_steps: int | None = None) -> int:
    """Total optimizer steps that fit: the steps done plus what the remaining time allows (at least one more)."""
    remaining = budget_seconds - elapsed - reserved_seconds
    more = max(int(math.floor(remaining / max(seconds_per_step, 1e-9))), 1)
    total = step + more
    return min(total, max_steps) if max_steps else total


def replan(plan: Plan, *, step: int, elapsed: float, seconds_per_step: float, reserved_seconds: float,
           max_steps: int | None = None) -> Plan:
    """Refresh a budgeted plan's length while still in the stable phase; freeze it once decay has begun."""
    if plan.frozen or plan.budget_seconds <= 0:
        return plan
    if elapsed >= (1.0 - plan.decay_ratio) * plan.budget_seconds:  # the decay phase of the budget has begun
        if plan.seconds_per_step <= 0:
            # never planned yet: a short budget reached its decay phase during calibration, and the provisional
            # length (epochs x steps) would overrun it; plan once, from the time left, then freeze
            plan.total_steps = max(budget_steps(plan.budget_seconds, elapsed, step, seconds_per_step,
                                                reserved_seconds, max_steps), step + 1)
            plan.seconds_per_step = seconds_per_step
        plan.frozen = True
        return plan
    plan.total_steps = max(budget_steps(plan.budget_seconds, elapsed, step, seconds_per_step, reserved_seconds,
                                        max_steps), step + 1)
    plan.seconds_per_step = seconds_per_step
    return plan


def set_learning_rate(optimizer, peak_lr: float, plan: Plan, step: int) -> float:
    """Set every param group's lr for optimizer step ``step`` (stateless, so a resumed run needs no scheduler state)."""
    lr = peak_lr * plan.lr_factor(step)
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
    return lr
