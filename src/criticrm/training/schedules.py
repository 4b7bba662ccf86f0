"""λ(t): the weight of the critique loss in L = λ·L_c + (1 − λ)·L_r.

Critic-RM decays λ: learn to critique while the critiques are still diverse, then focus on the reward,
which overfits easily. The paper's exact equation is not public, so this is a family:

- `cosine` (default) and `linear`: decay from `start` to `end` over training;
- `step`: one value per round (by default one round per epoch, the paper's "rounds"), `start` to `end`;
- `constant`: `start` throughout (the paper's ablation);
- `reverse`: increasing from `end` to `start` (reward first; the paper's other ablation);
- any Python function, given as "package.module:function", called with a `LambdaContext`.

Every schedule is exact at its ends: the first optimizer step (index 0) uses its first value and the
last one (index total_steps − 1) its last value.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable
from dataclasses import dataclass

BUILTIN_SCHEDULES = ("cosine", "linear", "step", "constant", "reverse")


@dataclass(frozen=True)
class LambdaContext:
    """Where training is, for a λ schedule: optimizer step `step` of `total_steps` (0-based)."""

    step: int
    total_steps: int
    num_epochs: float
    start: float
    end: float

    @property
    def progress(self) -> float:
        """0.0 at the first optimizer step, 1.0 at the last."""
        if self.total_steps <= 1:
            return 0.0
        return min(1.0, max(0.0, self.step / (self.total_steps - 1)))

    @property
    def epoch(self) -> int:
        """The epoch the step belongs to (0-based)."""
        if self.total_steps <= 0:
            return 0
        per_epoch = self.total_steps / max(self.num_epochs, 1e-9)
        return min(int(math.ceil(self.num_epochs)) - 1, int(self.step // per_epoch)) if per_epoch else 0


class LambdaSchedule:
    """A named schedule bound to its end values; call it with (step, total_steps) to get λ."""

    def __init__(self, name: str = "cosine", start: float = 0.9, end: float = 0.1, rounds: int | None = None,
                 num_epochs: float = 1.0):
        self.name = name
        self.start, self.end = float(start), float(end)
        self.num_epochs = num_epochs
        self.rounds = rounds
        self._custom: Callable[[LambdaContext], float] | None = None
        if name not in BUILTIN_SCHEDULES:
            self._custom = load_callable(name)
        if rounds is not None and rounds < 1:
            raise ValueError("lambda rounds must be at least 1")

    def __call__(self, step: int, total_steps: int) -> float:
        context = LambdaContext(step=step, total_steps=total_steps, num_epochs=self.num_epochs,
                                start=self.start, end=self.end)
        if self._custom is not None:
            value = float(self._custom(context))
        else:
            value = _BUILTINS[self.name](context, self)
        if not 0.0 <= value <= 1.0 or math.isnan(value):
            raise ValueError(f"λ schedule {self.name!r} gave {value} at step {step}/{total_steps}; λ must be in [0, 1]")
        return value

    def check(self) -> None:
        """Raise ValueError unless λ can be computed at the first and last step of a run (a user function is
        called): a broken schedule fails when the config is read, not after the model has loaded."""
        for step in (0, 1):
            try:
                self(step, 2)
            except ValueError:
                raise
            except Exception as error:  # whatever a user's function raises
                raise ValueError(f"λ schedule {self.name!r} failed at step {step} of 2: "
                                 f"{type(error).__name__}: {error}") from None

    def __repr__(self) -> str:
        return f"LambdaSchedule({self.name!r}, start={self.start}, end={self.end})"


def _lerp(a: float, b: float, t: float) -> float:
    """a at t = 0 and b at t = 1, exactly (a + (b - a)·t is not exact at t = 1 in floating point)."""
    return a if t <= 0.0 else b if t >= 1.0 else a * (1.0 - t) + b * t


def _linear(context: LambdaContext, _schedule: LambdaSchedule) -> float:
    return _lerp(context.start, context.end, context.progress)


def _cosine(context: LambdaContext, _schedule: LambdaSchedule) -> float:
    return _lerp(context.end, context.start, 0.5 * (1.0 + math.cos(math.pi * context.progress)))


def _step(context: LambdaContext, schedule: LambdaSchedule) -> float:
    rounds = schedule.rounds or max(1, int(math.ceil(context.num_epochs)))
    if rounds == 1 or context.total_steps <= 1:
        return context.start
    index = min(rounds - 1, context.step * rounds // context.total_steps)
    if context.step >= context.total_steps - 1:
        index = rounds - 1
    return _lerp(context.start, context.end, index / (rounds - 1))


def _constant(context: LambdaContext, _schedule: LambdaSchedule) -> float:
    return context.start


def _reverse(context: LambdaContext, _schedule: LambdaSchedule) -> float:
    return _lerp(context.end, context.start, context.progress)


_BUILTINS = {"cosine": _cosine, "linear": _linear, "step": _step, "constant": _constant, "reverse": _reverse}


def load_callable(spec: str) -> Callable:
    """Import "package.module:function"."""
    if ":" not in spec:
        raise ValueError(f"unknown λ schedule {spec!r}: use one of {', '.join(BUILTIN_SCHEDULES)} "
                         "or a Python function as 'package.module:function'")
    module_name, _, attribute = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ValueError(f"λ schedule {spec!r}: cannot import {module_name!r} ({error})") from None
    function = getattr(module, attribute, None)
    if not callable(function):
        raise ValueError(f"λ schedule {spec!r}: {module_name} has no function {attribute!r}")
    return function
