"""The table of optimizers under test, which drives the shared battery in test_battery.py.

Each case names a jadam constructor with fixed keyword arguments, the independent float64
reference of its paper (tests/reference.py), and, where the semantics coincide, the optax
transformation and the torch.optim optimizer that should give the same trajectory.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable
from typing import Any

import optax

import jadam
from tests import reference

# Arguments that shape the state and so must be Python numbers, never traced.
STATIC = {"initial_accumulator_value", "alpha_warmup", "b3_warmup", "warmup_steps"}

# What the papers say of each optimizer beyond elementwise math, by registry name, for the tests
# that depend on it (a new optimizer gets its rows here, beside its CASES rows):
# REDUCES: its step sums over each array (LAMB's and MARS's norms, Adafactor's factored moments
# and update clipping, Adam-mini's block means, StableAdamW's RMS clipping, the cautious mask's
# count): it cannot be packed (a clear error), and split over devices it needs those sums
# across them, an all-reduce and no other collective.
REDUCES = {"lamb", "mars", "adafactor", "adam_mini", "cautious_adamw", "cautious_lion",
           "stable_adamw", "muon", "prodigy"}
# SPREADS_NAN: one NaN gradient entry reaches the whole array (Adafactor's factored moments and
# RMS clipping, Adam-mini's block means, MARS's clipping to unit norm, StableAdamW's RMS
# clipping). (LAMB's trust ratio falls back to 1 when a norm is not positive, NaN included;
# the cautious mask does not count a NaN entry as agreeing. Both keep the NaN at its entry.)
SPREADS_NAN = {"adafactor", "adam_mini", "mars", "stable_adamw", "muon"}
# NEEDS_PARAMS: update() without params must say it needs them: they read the parameters, or
# decay them by default.
NEEDS_PARAMS = {"adafactor", "lamb", "schedule_free_adamw", "adamw", "nadamw", "adan",
                "adam_mini", "cautious_adamw", "stable_adamw", "muon", "prodigy"}


@dataclasses.dataclass(frozen=True)
class Case:
    id: str
    ctor: Callable[..., optax.GradientTransformation]
    kwargs: dict[str, Any]
    reference: Any
    optax: Callable[[], optax.GradientTransformation] | None = None
    # (torch.optim class name, its keyword arguments), for torch.optim.<name>(params, **kwargs).
    torch: tuple[str, dict[str, Any]] | None = None
    # Per problem of test_converges: (learning rate, steps, loss to reach).
    converge: dict[str, tuple[float, int, float]] = dataclasses.field(default_factory=dict)
    # test_each_step_matches_paper's tolerance for a float32 update, in ulps (normwise).
    update_ulps: int = 4
    # ... and for a stored moment, in ulps of its dtype.
    state_ulps: int = 1
    # Precisions of test_each_step_matches_paper that the optimizer's docs advise against.
    unsupported_precisions: tuple[str, ...] = ()
    # test_trajectory_matches_paper_float64's and test_matches_optax's tolerances.
    trajectory_tol: float = 2e-6
    optax_tol: float = 1e-5

    def make(self, **overrides: Any) -> optax.GradientTransformation:
        return self.ctor(**{**self.kwargs, **overrides})

    @property
    def numeric_kwargs(self) -> dict[str, float]:
        """The arguments that are numbers, which a sweep may pass as traced arrays (or, if the
        case fixes none, the first numeric argument with its default)."""
        numeric = {
            k: v for k, v in self.kwargs.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in STATIC
        }
        if numeric:
            return numeric
        for name, param in inspect.signature(self.ctor).parameters.items():
            if isinstance(param.default, float) and name not in STATIC:
                return {name: param.default}
        raise AssertionError(f"{self.id} has no numeric argument")

    def accepts(self, name: str) -> bool:
        return name in inspect.signature(self.ctor).parameters

    def injected(self) -> optax.GradientTransformation:
        """The case under ``optax.inject_hyperparams``, which takes every numeric argument as an
        array and every function for a schedule unless named in ``static_args``."""
        return inject(self.ctor, self.kwargs)


def inject(ctor: Callable[..., Any], kwargs: dict[str, Any]) -> optax.GradientTransformation:
    """``optax.inject_hyperparams(ctor)(**kwargs)``, a partial's keywords passed as arguments, and
    the arguments that are functions but not schedules (``partition``, ``mask``) static."""
    if isinstance(ctor, functools.partial):
        ctor, kwargs = ctor.func, {**ctor.keywords, **kwargs}
    names = inspect.signature(ctor).parameters
    static = tuple(n for n in ("partition", "mask") if n in names)
    return optax.inject_hyperparams(ctor, static_args=static)(**kwargs)


# Adam-mini with one block per parameter is AdamW.
_adam_mini_as_adamw = functools.partial(jadam.adam_mini, partition=lambda path, shape: ())
_adam_mini_as_adamw.__name__ = "adam_mini_as_adamw"  # type: ignore[attr-defined]

CASES = [
    Case("adam", jadam.adam, {}, reference.Adam(), lambda: optax.adam(1e-3),
         torch=("Adam", {"lr": 1e-3})),
    Case(
        "adam-tuned",
        jadam.adam,
        {"learning_rate": 1e-2, "b1": 0.8, "b2": 0.99, "eps": 1e-6},
        reference.Adam(learning_rate=1e-2, b1=0.8, b2=0.99, eps=1e-6),
        lambda: optax.adam(1e-2, b1=0.8, b2=0.99, eps=1e-6),
        torch=("Adam", {"lr": 1e-2, "betas": (0.8, 0.99), "eps": 1e-6}),
    ),
    Case(
        "adam-l2",
        jadam.adam,
        {"learning_rate": 1e-2, "weight_decay": 0.1},
        reference.Adam(learning_rate=1e-2, weight_decay=0.1),
        lambda: optax.chain(optax.add_decayed_weights(0.1), optax.adam(1e-2)),
        torch=("Adam", {"lr": 1e-2, "weight_decay": 0.1}),
    ),
    Case(
        "adam-amsgrad",
        jadam.adam,
        {"learning_rate": 1e-2, "amsgrad": True},
        reference.Adam(learning_rate=1e-2, amsgrad=True),
        torch=("Adam", {"lr": 1e-2, "amsgrad": True}),
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
        torch=("Adam", {"lr": 1e-2, "maximize": True}),
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
        torch=("AdamW", {"lr": 1e-2, "weight_decay": 0.1}),
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
    Case(
        "sgd",
        jadam.sgd,
        {"learning_rate": 0.1},
        reference.SGD(learning_rate=0.1),
        lambda: optax.sgd(0.1),
        torch=("SGD", {"lr": 0.1}),
        converge={"rosenbrock": (1e-3, 6000, 1e-2)},
    ),
    Case(
        "sgd-momentum",
        jadam.sgd,
        {"learning_rate": 0.05, "momentum": 0.9},
        reference.SGD(learning_rate=0.05, momentum=0.9),
        lambda: optax.sgd(0.05, momentum=0.9),
        torch=("SGD", {"lr": 0.05, "momentum": 0.9}),
        converge={"rosenbrock": (5e-4, 6000, 1e-2)},
    ),
    Case(
        "sgd-nesterov-l2",
        jadam.sgd,
        {"learning_rate": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 0.01},
        reference.SGD(learning_rate=0.05, momentum=0.9, nesterov=True, weight_decay=0.01),
        lambda: optax.chain(optax.add_decayed_weights(0.01),
                            optax.sgd(0.05, momentum=0.9, nesterov=True)),
        torch=("SGD", {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 0.01}),
        converge={"rosenbrock": (5e-4, 6000, 1e-2)},
    ),
    Case(
        "sgd-dampening-maximize",
        jadam.sgd,
        {"learning_rate": 0.05, "momentum": 0.8, "dampening": 0.3, "maximize": True},
        reference.SGD(learning_rate=0.05, momentum=0.8, dampening=0.3, maximize=True),
        torch=("SGD", {"lr": 0.05, "momentum": 0.8, "dampening": 0.3, "maximize": True}),
        converge={"rosenbrock": (5e-4, 6000, 1e-2)},
    ),
    Case(
        "adadelta",
        jadam.adadelta,
        {},
        reference.Adadelta(),
        lambda: optax.adadelta(1.0),
        torch=("Adadelta", {"lr": 1.0}),
        # Adadelta crawls along Rosenbrock's valley: 12.5 -> 0.57 in 6000 steps.
        converge={"parabola": (1.0, 1500, 1e-3), "rosenbrock": (1.0, 6000, 1.0)},
    ),
    Case(
        "adadelta-l2",
        jadam.adadelta,
        {"learning_rate": 0.5, "rho": 0.95, "eps": 1e-5, "weight_decay": 0.01},
        reference.Adadelta(learning_rate=0.5, rho=0.95, eps=1e-5, weight_decay=0.01),
        torch=("Adadelta", {"lr": 0.5, "rho": 0.95, "eps": 1e-5, "weight_decay": 0.01}),
        converge={"parabola": (1.0, 1500, 1e-3), "rosenbrock": (1.0, 6000, 2.0)},
    ),
    Case(
        "adagrad",
        jadam.adagrad,
        {"learning_rate": 0.1},
        reference.Adagrad(learning_rate=0.1),
        torch=("Adagrad", {"lr": 0.1}),
        converge={"parabola": (0.5, 1500, 1e-3), "rosenbrock": (0.5, 6000, 1e-2)},
    ),
    Case(
        "adagrad-decay-l2",
        jadam.adagrad,
        {"learning_rate": 0.1, "lr_decay": 0.01, "initial_accumulator_value": 0.1,
         "weight_decay": 0.01},
        reference.Adagrad(learning_rate=0.1, lr_decay=0.01, initial_accumulator_value=0.1,
                          weight_decay=0.01),
        torch=("Adagrad", {"lr": 0.1, "lr_decay": 0.01, "initial_accumulator_value": 0.1,
                           "weight_decay": 0.01}),
        # lr_decay shrinks the rate 60-fold over 6000 steps: 12.5 -> 0.07 on Rosenbrock.
        converge={"parabola": (2.0, 1500, 1e-3), "rosenbrock": (2.0, 6000, 0.1)},
    ),
    Case(
        "adagrad-as-optax",
        jadam.adagrad,
        {"learning_rate": 0.1, "initial_accumulator_value": 0.1, "eps": 0.0},
        reference.Adagrad(learning_rate=0.1, initial_accumulator_value=0.1, eps=0.0),
        lambda: optax.adagrad(0.1, eps=0.0),
        converge={"parabola": (0.5, 1500, 1e-3), "rosenbrock": (0.5, 6000, 1e-2)},
    ),
    Case(
        "rmsprop",
        jadam.rmsprop,
        {},
        reference.RMSprop(),
        torch=("RMSprop", {"lr": 1e-2}),
        converge={"rosenbrock": (1e-3, 6000, 1e-2)},
    ),
    Case(
        "rmsprop-centered-momentum-l2",
        jadam.rmsprop,
        {"learning_rate": 1e-3, "centered": True, "momentum": 0.9, "weight_decay": 0.01},
        reference.RMSprop(learning_rate=1e-3, centered=True, momentum=0.9, weight_decay=0.01),
        torch=("RMSprop", {"lr": 1e-3, "centered": True, "momentum": 0.9,
                           "weight_decay": 0.01}),
        converge={"rosenbrock": (1e-3, 6000, 1e-2)},
    ),
    Case(
        "rmsprop-as-optax",
        jadam.rmsprop,
        {"learning_rate": 1e-2, "decay": 0.9, "eps_in_sqrt": True, "maximize": True},
        reference.RMSprop(learning_rate=1e-2, decay=0.9, eps_in_sqrt=True, maximize=True),
        lambda: optax.chain(optax.scale(-1.0), optax.rmsprop(1e-2)),
        converge={"rosenbrock": (1e-3, 6000, 1e-2)},
    ),
    Case(
        "amsgrad",
        jadam.amsgrad,
        {"learning_rate": 1e-2, "b2": 0.99},
        reference.Adam(learning_rate=1e-2, b2=0.99, amsgrad=True),
        torch=("Adam", {"lr": 1e-2, "betas": (0.9, 0.99), "amsgrad": True}),
    ),
    Case(
        "nadam",
        jadam.nadam,
        {},
        reference.NAdam(),
        torch=("NAdam", {}),
    ),
    Case(
        "nadam-l2-maximize",
        jadam.nadam,
        {"learning_rate": 1e-2, "b1": 0.8, "weight_decay": 0.1, "maximize": True},
        reference.NAdam(learning_rate=1e-2, b1=0.8, weight_decay=0.1, maximize=True),
        torch=("NAdam", {"lr": 1e-2, "betas": (0.8, 0.999), "weight_decay": 0.1,
                         "maximize": True}),
    ),
    Case(
        "nadam-as-optax",
        jadam.nadam,
        {"momentum_decay": 0.0},
        reference.NAdam(momentum_decay=0.0),
        lambda: optax.nadam(2e-3),
    ),
    Case(
        "nadamw",
        jadam.nadamw,
        {"learning_rate": 1e-2, "weight_decay": 0.1},
        reference.NAdam(learning_rate=1e-2, weight_decay=0.1, decoupled=True),
        torch=("NAdam", {"lr": 1e-2, "weight_decay": 0.1, "decoupled_weight_decay": True}),
    ),
    Case(
        "nadamw-as-optax",
        jadam.nadamw,
        {"learning_rate": 1e-2, "weight_decay": 0.1, "momentum_decay": 0.0},
        reference.NAdam(learning_rate=1e-2, weight_decay=0.1, decoupled=True,
                        momentum_decay=0.0),
        lambda: optax.nadamw(1e-2, weight_decay=0.1),
    ),
    Case(
        "radam",
        jadam.radam,
        {},
        reference.RAdam(),
        torch=("RAdam", {}),
        # RAdam's first 5 steps are plain momentum steps of the raw gradient (~150 here).
        converge={"rosenbrock": (2e-3, 6000, 1e-2)},
        # rho_t = rho_inf - 2t b2^t / (1 - b2^t) subtracts from rho_inf ~ 2000 in float32, so
        # near the switch (rho_t ~ 5) it carries ~2e-5 relative error: 70 ulps of the update
        # observed. torch computes it in float64; the trajectories still agree to 1e-5.
        update_ulps=100,
    ),
    Case(
        "radam-l2-short-horizon",
        jadam.radam,
        {"learning_rate": 1e-2, "b2": 0.9, "weight_decay": 0.1},
        reference.RAdam(learning_rate=1e-2, b2=0.9, weight_decay=0.1),
        torch=("RAdam", {"lr": 1e-2, "betas": (0.9, 0.9), "weight_decay": 0.1}),
        # RAdam's first 5 steps are plain momentum steps of the raw gradient (~150 here).
        converge={"rosenbrock": (2e-3, 6000, 1e-2)},
        # rho_t = rho_inf - 2t b2^t / (1 - b2^t) subtracts from rho_inf ~ 2000 in float32, so
        # near the switch (rho_t ~ 5) it carries ~2e-5 relative error: 70 ulps of the update
        # observed. torch computes it in float64; the trajectories still agree to 1e-5.
        update_ulps=100,
    ),
    Case(
        "radam-decoupled-as-optax",
        jadam.radam,
        {"eps": 0.0, "weight_decay": 0.1, "decoupled_weight_decay": True},
        reference.RAdam(eps=0.0, weight_decay=0.1, decoupled=True),
        lambda: optax.chain(optax.scale_by_radam(eps=0.0), optax.add_decayed_weights(0.1),
                            optax.scale(-1e-3)),
        torch=("RAdam", {"eps": 0.0, "weight_decay": 0.1, "decoupled_weight_decay": True}),
        # RAdam's first 5 steps are plain momentum steps of the raw gradient (~150 here).
        converge={"rosenbrock": (2e-3, 6000, 1e-2)},
        # rho_t = rho_inf - 2t b2^t / (1 - b2^t) subtracts from rho_inf ~ 2000 in float32, so
        # near the switch (rho_t ~ 5) it carries ~2e-5 relative error: 70 ulps of the update
        # observed. torch computes it in float64; the trajectories still agree to 1e-5.
        update_ulps=100,
    ),
    Case(
        "adamax",
        jadam.adamax,
        {},
        reference.Adamax(),
        lambda: optax.adamax(2e-3),
        torch=("Adamax", {}),
    ),
    Case(
        "adamax-l2-maximize",
        jadam.adamax,
        {"learning_rate": 1e-2, "b2": 0.99, "weight_decay": 0.1, "maximize": True},
        reference.Adamax(learning_rate=1e-2, b2=0.99, weight_decay=0.1, maximize=True),
        torch=("Adamax", {"lr": 1e-2, "betas": (0.9, 0.99), "weight_decay": 0.1,
                          "maximize": True}),
    ),
    Case(
        "lion",
        jadam.lion,
        {"learning_rate": 1e-3, "weight_decay": 0.1},
        reference.Lion(learning_rate=1e-3, weight_decay=0.1),
        lambda: optax.lion(1e-3, weight_decay=0.1),
        # Every step moves by exactly lr: 1500 steps reach the parabola's optimum only within
        # lr, and Rosenbrock's valley needs a small rate.
        converge={"parabola": (0.01, 1500, 1e-3), "rosenbrock": (1e-3, 6000, 1e-2)},
    ),
    Case(
        "lion-maximize",
        jadam.lion,
        {"b1": 0.95, "b2": 0.98, "maximize": True},
        reference.Lion(b1=0.95, b2=0.98, maximize=True),
        converge={"parabola": (0.01, 1500, 1e-3), "rosenbrock": (1e-3, 6000, 1e-2)},
    ),
    Case(
        "adabelief",
        jadam.adabelief,
        {},
        reference.AdaBelief(),
        lambda: optax.adabelief(1e-3),
    ),
    Case(
        "adabelief-decay",
        jadam.adabelief,
        {"learning_rate": 1e-2, "eps": 1e-8, "eps_root": 1e-12, "weight_decay": 0.1},
        reference.AdaBelief(learning_rate=1e-2, eps=1e-8, eps_root=1e-12, weight_decay=0.1),
    ),
    Case(
        "yogi",
        jadam.yogi,
        {},
        reference.Yogi(),
        # Yogi branches on sign(v - g^2): where v and g^2 agree to rounding, float32 and
        # float64 (or two float32 orders) branch apart and the runs part by ~1e-5. Each step is
        # still checked to 4 ulps by test_each_step_matches_paper.
        trajectory_tol=2e-5,
        optax_tol=2e-5,
    ),
    Case(
        "yogi-zero-start-l2",
        jadam.yogi,
        {"learning_rate": 1e-2, "initial_accumulator_value": 0.0, "weight_decay": 0.01},
        reference.Yogi(learning_rate=1e-2, initial_accumulator_value=0.0, weight_decay=0.01),
        # See "yogi" above.
        trajectory_tol=2e-5,
    ),
    Case(
        "adopt",
        jadam.adopt,
        {},
        reference.Adopt(),
        lambda: optax.contrib.adopt(1e-3),
        # With b2 = 0.9999 the scale adapts slowly: 12.5 -> 0.57 on Rosenbrock in 6000 steps.
        converge={"rosenbrock": (0.02, 6000, 1.0)},
    ),
    Case(
        "adopt-nesterov-decay-maximize",
        jadam.adopt,
        {"learning_rate": 1e-2, "b2": 0.999, "weight_decay": 0.1, "nesterov": True,
         "maximize": True},
        reference.Adopt(learning_rate=1e-2, b2=0.999, weight_decay=0.1, nesterov=True,
                        maximize=True),
        converge={"rosenbrock": (0.02, 6000, 1.0)},
    ),
    Case(
        "adopt-unclipped",
        jadam.adopt,
        {"learning_rate": 1e-2, "use_clipping": False},
        reference.Adopt(learning_rate=1e-2, use_clipping=False),
        lambda: optax.contrib.adopt(1e-2, use_clipping=False),
        converge={"rosenbrock": (0.02, 6000, 1.0)},
        # Unclipped, the normalised gradient is unbounded early on, and the float32 run parts
        # from the float64 one by 3e-5 of the leaf's scale (observed). Each step is still
        # checked to 4 ulps by test_each_step_matches_paper.
        trajectory_tol=1e-4,
        # mu averages g / max(sqrt(nu), eps), itself two roundings: 1.4 ulps observed.
        state_ulps=2,
    ),
    Case("adam_atan2", jadam.adam_atan2, {}, reference.AdamAtan2()),
    Case(
        "adam_atan2-tuned-decay-maximize",
        jadam.adam_atan2,
        {"learning_rate": 1e-2, "b2": 0.99, "a": 1.0, "b": 2.0, "weight_decay": 0.1,
         "maximize": True},
        reference.AdamAtan2(learning_rate=1e-2, b2=0.99, a=1.0, b=2.0, weight_decay=0.1,
                            maximize=True),
    ),
    Case("laprop", jadam.laprop, {}, reference.LaProp()),
    Case(
        "laprop-decay-maximize",
        jadam.laprop,
        {"learning_rate": 1e-2, "b1": 0.95, "b2": 0.9, "eps": 1e-8, "weight_decay": 0.1,
         "maximize": True},
        reference.LaProp(learning_rate=1e-2, b1=0.95, b2=0.9, eps=1e-8, weight_decay=0.1,
                         maximize=True),
    ),
    Case("stable_adamw", jadam.stable_adamw, {}, reference.StableAdamW()),
    Case(
        # b2 = 0.999: the second moment lags, and the clipping acts on many steps.
        "stable_adamw-slow-nu-maximize",
        jadam.stable_adamw,
        {"learning_rate": 1e-2, "b2": 0.999, "weight_decay": 0.1, "maximize": True},
        reference.StableAdamW(learning_rate=1e-2, b2=0.999, weight_decay=0.1, maximize=True),
    ),
    # Muon: one step's Newton-Schulz iteration is fifteen float32 matrix products, and its
    # quintic amplifies a rounding error near 0 by up to 3.4 per step: 15 ulps of the update
    # observed (update_ulps), where the reference works on float64 singular values. The
    # trajectories stay within the default 2e-6 (observed 6.7e-7).
    Case("muon", jadam.muon, {"weight_decay": 1e-2}, reference.Muon(), update_ulps=32),
    Case(
        "muon-jordan-maximize",
        jadam.muon,
        {"learning_rate": 2e-2, "beta": 0.9, "weight_decay": 0.1, "consistent_rms": None,
         "maximize": True},
        reference.Muon(learning_rate=2e-2, beta=0.9, weight_decay=0.1, consistent_rms=None,
                       maximize=True),
        update_ulps=32,
    ),
    Case(
        # Without Nesterov, optax's bias-corrected average is Muon's sum times a factor that
        # the orthogonalisation removes (see jadam.muon).
        "muon-plain-momentum",
        jadam.muon,
        {"learning_rate": 1e-2, "nesterov": False, "weight_decay": 0.0},
        reference.Muon(learning_rate=1e-2, nesterov=False, weight_decay=0.0),
        lambda: optax.contrib.muon(1e-2, nesterov=False, consistent_rms=0.2),
        update_ulps=32,
    ),
    # Prodigy: its reference steps the whole tree (one estimate of d for all arrays). Its
    # estimate reads <g, x0 - x>, how far the parameters have moved: in the first steps, steps
    # of d0 = 1e-6 on parameters of 1 to 10, a few float32 ulps of them, which the float64
    # reference has exactly. After 100 steps d is 4.7% below the reference's, and the
    # trajectory 2.6e-3 of scale away (trajectory_tol); each step's arithmetic, fed jadam's
    # own parameters, is within the default ulps. (With d0 = 1e-4, below, the parameters move
    # by many ulps and the default 2e-6 holds.) float16 parameters: steps of d0 are below
    # float16's normal range (6e-5), so the first updates keep a few bits.
    Case("prodigy", jadam.prodigy, {}, reference.Prodigy(), trajectory_tol=1e-2,
         unsupported_precisions=("f16-f32-nu", "f16-f32-state"),
         converge={"parabola": (1.0, 1500, 1e-3), "rosenbrock": (1.0, 6000, 1e-2)}),
    Case(
        # optax always folds Adam's bias corrections into the rate; it puts the new d in the
        # eps term (see jadam.prodigy).
        "prodigy-bias-corrected-decay",
        jadam.prodigy,
        {"bias_correction": True, "weight_decay": 0.01},
        reference.Prodigy(bias_correction=True, weight_decay=0.01),
        lambda: optax.contrib.prodigy(weight_decay=0.01),
        unsupported_precisions=("f16-f32-nu", "f16-f32-state"),
        converge={"parabola": (1.0, 1500, 1e-3), "rosenbrock": (1.0, 6000, 1e-2)},
    ),
    Case(
        "prodigy-tuned-maximize",
        jadam.prodigy,
        {"learning_rate": 0.5, "b3": 0.99, "d0": 1e-4, "d_coef": 0.5, "maximize": True},
        reference.Prodigy(learning_rate=0.5, b3=0.99, d0=1e-4, d_coef=0.5, maximize=True),
        unsupported_precisions=("f16-f32-nu", "f16-f32-state"),
        converge={"parabola": (1.0, 1500, 1e-3), "rosenbrock": (1.0, 6000, 1e-2)},
    ),
    Case(
        "lamb",
        jadam.lamb,
        {"weight_decay": 0.0},
        reference.Lamb(weight_decay=0.0),
        lambda: optax.lamb(1e-3),
        # Each step moves a layer by lr * ||x||, whatever the gradient: the rate sets how close
        # it gets, and Rosenbrock's valley passes near the origin, where steps are tiny (about
        # 5000 steps at lr = 5e-3 to leave it).
        converge={"parabola": (2e-3, 3000, 1e-3), "rosenbrock": (5e-3, 6000, 1e-2)},
    ),
    Case(
        "lamb-decay-maximize",
        jadam.lamb,
        {"learning_rate": 1e-2, "b1": 0.8, "weight_decay": 0.05, "maximize": True},
        reference.Lamb(learning_rate=1e-2, b1=0.8, weight_decay=0.05, maximize=True),
        lambda: optax.chain(optax.scale(-1.0), optax.lamb(1e-2, b1=0.8, weight_decay=0.05)),
        converge={"parabola": (2e-3, 3000, 1e-3), "rosenbrock": (5e-3, 6000, 1e-2)},
    ),
    Case(
        "adan",
        jadam.adan,
        {"weight_decay": 0.0},
        reference.Adan(weight_decay=0.0),
        # mu_diff averages g_t - g_{t-1}, itself rounded once: 1.1 ulps observed.
        state_ulps=2,
    ),
    Case(
        "adan-proximal-decay-maximize",
        jadam.adan,
        {"learning_rate": 1e-2, "b2": 0.9, "weight_decay": 0.1, "maximize": True},
        reference.Adan(learning_rate=1e-2, b2=0.9, weight_decay=0.1, maximize=True),
        state_ulps=2,
    ),
    Case(
        "adan-decoupled",
        jadam.adan,
        {"learning_rate": 1e-2, "weight_decay": 0.1, "proximal": False},
        reference.Adan(learning_rate=1e-2, weight_decay=0.1, proximal=False),
        state_ulps=2,
    ),
    Case(
        "mars",
        jadam.mars,
        {},
        reference.Mars(),
        state_ulps=2,  # as below
    ),
    Case(
        "mars-decay-maximize",
        jadam.mars,
        {"learning_rate": 1e-2, "gamma": 0.1, "weight_decay": 0.1, "maximize": True},
        reference.Mars(learning_rate=1e-2, gamma=0.1, weight_decay=0.1, maximize=True),
        # mu averages the corrected, clipped gradient, itself four roundings: 1 ulp observed.
        state_ulps=2,
    ),
    Case(
        "ademamix",
        jadam.ademamix,
        {},
        reference.AdEMAMix(),
        # The slow average (1 - b3 = 1e-4) keeps a heavy ball rolling for thousands of steps.
        converge={"parabola": (0.05, 6000, 1e-3), "rosenbrock": (0.05, 6000, 1e-2)},
        # In float16 the slow average starts below float16's normal range (1e-4 of a gradient
        # of 1e-3) and loses 1e-2 of itself to subnormal rounding; its docs say to keep it in
        # float32, which the f16-f32-state precision checks.
        unsupported_precisions=("f16-f32-nu",),
    ),
    Case(
        "ademamix-warmups-decay-maximize",
        jadam.ademamix,
        {"learning_rate": 1e-2, "b3": 0.999, "alpha": 8.0, "alpha_warmup": 150,
         "b3_warmup": 150, "weight_decay": 0.1, "maximize": True},
        reference.AdEMAMix(learning_rate=1e-2, b3=0.999, alpha=8.0, alpha_warmup=150,
                           b3_warmup=150, weight_decay=0.1, maximize=True),
        converge={"parabola": (0.02, 3000, 1e-3), "rosenbrock": (0.02, 6000, 1e-2)},
        # beta3(t) is an exp of a quotient of logs: with its product and sum, 1.5 ulps of the
        # slow average observed.
        state_ulps=2,
        unsupported_precisions=("f16-f32-nu",),
    ),
    Case(
        "adafactor",
        jadam.adafactor,
        {},
        reference.Adafactor(),
        torch=("Adafactor", {}),
        # No momentum and a constant relative step: it rattles across Rosenbrock's valley
        # (12.5 -> 0.009 in 6000 steps at 5e-3, 0.02 at 1e-2).
        converge={"rosenbrock": (5e-3, 6000, 2e-2)},
    ),
    Case(
        "adafactor-decay-maximize",
        jadam.adafactor,
        {"learning_rate": 5e-3, "beta2_decay": -0.5, "eps1": 1e-6, "eps2": 1e-2, "d": 2.0,
         "weight_decay": 0.1, "maximize": True},
        reference.Adafactor(learning_rate=5e-3, beta2_decay=-0.5, eps1=1e-6, eps2=1e-2, d=2.0,
                            weight_decay=0.1, maximize=True),
        torch=("Adafactor", {"lr": 5e-3, "beta2_decay": -0.5, "eps": (1e-6, 1e-2), "d": 2.0,
                             "weight_decay": 0.1, "maximize": True}),
        converge={"rosenbrock": (5e-3, 6000, 2e-2)},
    ),
    Case(
        "schedule_free_adamw",
        jadam.schedule_free_adamw,
        {},
        reference.ScheduleFree(),
    ),
    Case(
        "schedule_free_adamw-warmup-decay-maximize",
        jadam.schedule_free_adamw,
        {"learning_rate": 1e-2, "b1": 0.8, "warmup_steps": 50, "weight_lr_power": 1.5,
         "weight_decay": 0.1, "maximize": True},
        reference.ScheduleFree(learning_rate=1e-2, b1=0.8, warmup_steps=50,
                               weight_lr_power=1.5, weight_decay=0.1, maximize=True),
    ),
    Case(
        "adam_mini",
        jadam.adam_mini,
        {"weight_decay": 0.0},
        reference.AdamMini(weight_decay=0.0),
    ),
    Case(
        "adam_mini-decay-maximize",
        jadam.adam_mini,
        {"learning_rate": 1e-2, "b2": 0.99, "weight_decay": 0.1, "maximize": True},
        reference.AdamMini(learning_rate=1e-2, b2=0.99, weight_decay=0.1, maximize=True),
    ),
    Case(
        "adam_mini-as-adamw",
        _adam_mini_as_adamw,
        {"learning_rate": 1e-2, "weight_decay": 0.1},
        reference.Adam(learning_rate=1e-2, weight_decay=0.1, decoupled=True),
        lambda: optax.adamw(1e-2, weight_decay=0.1),
        torch=("AdamW", {"lr": 1e-2, "weight_decay": 0.1}),
    ),
    Case(
        "cautious_adamw",
        jadam.cautious_adamw,
        {"learning_rate": 1e-2, "weight_decay": 0.1},
        reference.CautiousAdamW(learning_rate=1e-2, weight_decay=0.1),
    ),
    Case(
        "cautious_adamw-maximize",
        jadam.cautious_adamw,
        # Not b1 = 0.8: b1 / (1 - b1) = 4, and a bfloat16 gradient of exactly -4 mu makes the
        # new first moment an exact cancellation, whose sign (and so whether the cautious mask
        # keeps the entry, and the scale of the whole leaf) is decided by float32 rounding: it
        # agreed with the float64 reference with FMA and not without (a bfloat16 leaf 5% off).
        # 0.85 / 0.15 has no short binary form, so no pair of short-mantissa values cancels.
        {"b1": 0.85, "weight_decay": 0.0, "maximize": True},
        reference.CautiousAdamW(b1=0.85, weight_decay=0.0, maximize=True),
    ),
    Case(
        "cautious_lion",
        jadam.cautious_lion,
        {"learning_rate": 1e-3, "weight_decay": 0.1},
        reference.CautiousLion(learning_rate=1e-3, weight_decay=0.1),
        # As Lion: every kept entry moves by lr * d / (nnz + 1).
        converge={"parabola": (0.01, 1500, 1e-3), "rosenbrock": (1e-3, 6000, 1e-2)},
    ),
]
