"""The table of optimizers under test, which drives the shared battery in test_battery.py.

Each case names a jadam constructor with fixed keyword arguments, the independent float64
reference of its paper (tests/reference.py), and, where the semantics coincide, the optax
transformation that should give the same trajectory.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import optax

import jadam
from tests import reference


@dataclasses.dataclass(frozen=True)
class Case:
    id: str
    ctor: Callable[..., optax.GradientTransformation]
    kwargs: dict[str, Any]
    reference: Any
    optax: Callable[[], optax.GradientTransformation] | None = None

    def make(self, **overrides: Any) -> optax.GradientTransformation:
        return self.ctor(**{**self.kwargs, **overrides})

    @property
    def numeric_kwargs(self) -> dict[str, float]:
        """The arguments that are numbers, which a sweep may pass as traced arrays."""
        return {
            k: v for k, v in self.kwargs.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)
        }

    @property
    def needs_params(self) -> bool:
        return bool(self.kwargs.get("weight_decay", 0.0)) or self.ctor is jadam.adamw


CASES = [
    Case("adam", jadam.adam, {}, reference.Adam(), lambda: optax.adam(1e-3)),
    Case(
        "adam-tuned",
        jadam.adam,
        {"learning_rate": 1e-2, "b1": 0.8, "b2": 0.99, "eps": 1e-6},
        reference.Adam(learning_rate=1e-2, b1=0.8, b2=0.99, eps=1e-6),
        lambda: optax.adam(1e-2, b1=0.8, b2=0.99, eps=1e-6),
    ),
    Case(
        "adam-l2",
        jadam.adam,
        {"learning_rate": 1e-2, "weight_decay": 0.1},
        reference.Adam(learning_rate=1e-2, weight_decay=0.1),
        lambda: optax.chain(optax.add_decayed_weights(0.1), optax.adam(1e-2)),
    ),
    Case(
        "adam-amsgrad",
        jadam.adam,
        {"learning_rate": 1e-2, "amsgrad": True},
        reference.Adam(learning_rate=1e-2, amsgrad=True),
    ),
    Case(
        "adam-nesterov",
        jadam.adam,
        {"learning_rate": 1e-2, "nesterov": True},
        reference.Adam(learning_rate=1e-2, nesterov=True),
        lambda: optax.nadam(1e-2),
    ),
    Case(
        "adam-maximize",
        jadam.adam,
        {"learning_rate": 1e-2, "maximize": True},
        reference.Adam(learning_rate=1e-2, maximize=True),
        lambda: optax.chain(optax.scale(-1.0), optax.adam(1e-2)),
    ),
    Case(
        "adam-eps-root",
        jadam.adam,
        {"learning_rate": 1e-2, "eps": 0.0, "eps_root": 1e-8},
        reference.Adam(learning_rate=1e-2, eps=0.0, eps_root=1e-8),
        lambda: optax.adam(1e-2, eps=0.0, eps_root=1e-8),
    ),
    Case(
        "adamw",
        jadam.adamw,
        {"learning_rate": 1e-2, "weight_decay": 0.1},
        reference.Adam(learning_rate=1e-2, weight_decay=0.1, decoupled=True),
        lambda: optax.adamw(1e-2, weight_decay=0.1),
    ),
    Case(
        "adamw-amsgrad-nesterov-maximize",
        jadam.adamw,
        {"learning_rate": 1e-2, "weight_decay": 0.05, "amsgrad": True, "nesterov": True,
         "maximize": True},
        reference.Adam(learning_rate=1e-2, weight_decay=0.05, decoupled=True, amsgrad=True,
                       nesterov=True, maximize=True),
    ),
    Case(
        "scale_by_adam",
        jadam.scale_by_adam,
        {"b1": 0.85},
        reference.Adam(learning_rate=None, b1=0.85),
        lambda: optax.scale_by_adam(b1=0.85),
    ),
]
