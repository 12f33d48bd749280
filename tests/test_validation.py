"""Bad input fails early and says what to change: the call, the argument, the leaf."""

from __future__ import annotations

import inspect
import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jadam

CONSTRUCTORS = {f"jadam.{name}": info.make for name, info in jadam.optimizers.items()}
CONSTRUCTORS.update({
    f"jadam.{name}": getattr(jadam, name) for name in jadam.__all__ if name.startswith("scale_by_")
})

# (argument, bad value, what the message must say); every one fails in every constructor that
# takes the argument.
BAD = [
    ("learning_rate", -1e-3, "must be >= 0, got -0.001"),
    ("learning_rate", math.nan, "must be finite"),
    ("learning_rate", math.inf, "must be finite"),
    ("learning_rate", None, "must be a number >= 0 or a schedule"),
    ("learning_rate", "1e-3", "must be a real number, got str"),
    ("learning_rate", True, "must be a real number, got bool"),
    ("learning_rate", jnp.array([1e-3, 1e-2]), "must be a scalar, got an array of shape (2,)"),
    ("learning_rate", jnp.array(-1.0), "must be >= 0, got -1"),
    ("b1", 1.0, "must be in [0, 1), got 1"),
    ("b1", 1.5, "must be in [0, 1), got 1.5"),
    ("b1", -0.1, "must be in [0, 1), got -0.1"),
    ("b2", 1.0, "must be in [0, 1), got 1"),
    ("b2", np.float32(-0.5), "must be in [0, 1), got -0.5"),
    ("b2", "0.999", "must be a real number, got str"),
    ("b3", 1.0, "must be in [0, 1), got 1"),
    ("gamma", -0.1, "must be >= 0, got -0.1"),
    ("alpha", -1.0, "must be >= 0, got -1"),
    ("beta2_decay", 0.5, "must be in [-inf, 0], got 0.5"),
    ("eps1", -1.0, "must be >= 0, got -1"),
    ("eps2", math.nan, "must be finite"),
    ("d", 0.0, "must be > 0, got 0"),
    ("warmup_steps", -1, "must be an integer >= 0"),
    ("warmup_steps", 2.5, "must be an integer >= 0"),
    ("weight_lr_power", -1.0, "must be >= 0, got -1"),
    ("z_dtype", jnp.int32, "must be a floating or complex dtype, got int32"),
    ("alpha_warmup", 0, "must be an integer >= 1"),
    ("b3_warmup", 1.5, "must be an integer >= 1"),
    ("eps", -1e-8, "must be >= 0, got -1e-08"),
    ("eps", math.nan, "must be finite"),
    ("eps_root", -1.0, "must be >= 0, got -1"),
    ("weight_decay", -0.1, "must be >= 0, got -0.1"),
    ("weight_decay", math.inf, "must be finite"),
    ("momentum", -0.1, "must be >= 0, got -0.1"),
    ("momentum", math.nan, "must be finite"),
    ("dampening", 1.5, "must be in [0, 1], got 1.5"),
    ("rho", 0.0, "must be in (0, 1), got 0"),
    ("rho", 1.0, "must be in (0, 1), got 1"),
    ("lr_decay", -1.0, "must be >= 0, got -1"),
    ("initial_accumulator_value", -0.5, "must be >= 0, got -0.5"),
    ("decay", 1.0, "must be in [0, 1), got 1"),
    ("momentum_decay", -0.1, "must be >= 0, got -0.1"),
    ("mu_dtype", jnp.int32, "must be a floating or complex dtype, got int32"),
    ("nu_dtype", "not-a-dtype", "is not a dtype"),
]


def _takes(ctor, name: str) -> bool:
    return name in inspect.signature(ctor).parameters


def _call(ctor, **kwargs):
    """Calls ``ctor`` with ``kwargs``, and a valid learning rate if it requires one."""
    param = inspect.signature(ctor).parameters.get("learning_rate")
    if param is not None and param.default is inspect.Parameter.empty:
        kwargs.setdefault("learning_rate", 1e-3)
    return ctor(**kwargs)


@pytest.mark.parametrize(("arg", "value", "says"), BAD, ids=lambda x: repr(x)[:24])
def test_bad_hyperparameter_names_call_and_argument(arg, value, says) -> None:
    tested = 0
    for fn, ctor in CONSTRUCTORS.items():
        if not _takes(ctor, arg):
            continue
        with pytest.raises(ValueError, match=re.escape(says)) as info:
            _call(ctor, **{arg: value})
        assert str(info.value).startswith(f"{fn}({arg}="), str(info.value)
        tested += 1
    assert tested


def test_the_style_guides_example_message() -> None:
    with pytest.raises(ValueError, match=re.escape("jadam.adam(b1=1.5): b1 must be in [0, 1)")):
        jadam.adam(b1=1.5)


def test_boundaries_are_accepted() -> None:
    for ctor in (jadam.adam, jadam.adamw):
        ctor(learning_rate=0.0, b1=0.0, b2=0.0, eps=0.0, eps_root=0.0, weight_decay=0.0)
        ctor(learning_rate=1, b1=np.float64(0.99), b2=jnp.float32(0.5), eps=jnp.array(1e-6))
        ctor(learning_rate=optax.linear_schedule(0.0, 1e-3, 10))


def test_traced_values_are_not_validated_eagerly() -> None:
    """Under jit/vmap the value is unknown; construction must not fail (sweeps rely on it)."""
    params = {"w": jnp.ones(3)}

    def step(lr, b1):
        tx = jadam.adam(learning_rate=lr, b1=b1)
        return tx.update(params, tx.init(params), params)[0]["w"]

    out = jax.jit(jax.vmap(step))(jnp.array([1e-3, 1e-2]), jnp.array([0.9, 0.8]))
    assert out.shape == (2, 3)


def test_non_float_parameters_are_refused_with_their_path() -> None:
    params = {"dense": {"kernel": jnp.ones((2, 2)), "steps": jnp.zeros((), jnp.int32)}}
    with pytest.raises(TypeError, match=re.escape("parameter ['dense']['steps'] has dtype int32")):
        jadam.adam().init(params)


def test_shape_mismatch_names_the_leaf_and_never_broadcasts() -> None:
    tx = jadam.adam()
    params = {"a": jnp.ones((3,))}
    state = tx.init(params)
    with pytest.raises(ValueError, match=re.escape("gradient at ['a'] has shape (3, 1)")):
        jax.jit(tx.update)({"a": jnp.ones((3, 1))}, state, params)


def test_tree_mismatch_is_a_clear_error() -> None:
    tx = jadam.adam()
    state = tx.init({"a": jnp.ones(3), "b": jnp.ones(2)})
    with pytest.raises(ValueError, match=re.escape("gradients and state.mu have different tree")):
        tx.update({"a": jnp.ones(3)}, state)


def test_state_from_another_optimizer_is_a_clear_error() -> None:
    params = {"a": jnp.ones(3)}
    foreign = optax.sgd(0.1, momentum=0.9).init(params)
    with pytest.raises(TypeError, match="not the ScaleByAdamState that this optimizer's init"):
        jadam.adam().update(params, foreign, params)


def test_weight_decay_needs_params() -> None:
    params = {"a": jnp.ones(3)}
    for tx in (jadam.adamw(), jadam.adam(weight_decay=0.1)):
        with pytest.raises(ValueError, match=re.escape("needs params")):
            tx.update(params, tx.init(params))


# The optimizers whose math reads the parameters themselves, not only for weight decay.
READS_PARAMS = {"lamb", "adafactor", "schedule_free_adamw", "prodigy"}


def test_optimizers_that_read_params_say_so() -> None:
    params = {"a": jnp.ones(3)}
    for name, info in jadam.optimizers.items():
        no_decay = {"weight_decay": 0.0} if _takes(info.make, "weight_decay") else {}
        tx = _call(info.make, **no_decay)
        if name in READS_PARAMS:
            with pytest.raises(ValueError, match=re.escape(f"jadam.{name}: update() needs params")):
                tx.update(params, tx.init(params))
        else:
            tx.update(params, tx.init(params))


def test_bad_mask_structure() -> None:
    params = {"a": jnp.ones(3), "b": jnp.ones(2)}
    tx = jadam.adamw(mask={"a": True, "c": False})
    with pytest.raises(ValueError, match="weight-decay mask must have the structure"):
        tx.update(params, tx.init(params), params)


def test_state_made_with_other_options_is_a_clear_error() -> None:
    params = {"a": jnp.ones(3)}
    state = jadam.adam().init(params)
    with pytest.raises(TypeError, match=re.escape("the state has no 'nu_max'")):
        jadam.adam(amsgrad=True).update(params, state, params)


@pytest.mark.parametrize(
    "kwargs", [{"momentum": 0.0, "nesterov": True},
               {"momentum": 0.9, "dampening": 0.1, "nesterov": True}],
)
def test_nesterov_needs_momentum_and_no_dampening(kwargs) -> None:
    with pytest.raises(ValueError, match=re.escape("jadam.sgd(nesterov=True): Nesterov momentum")):
        jadam.sgd(0.1, **kwargs)


def test_nesterov_checks_concrete_arrays_and_accepts_traced_ones() -> None:
    jadam.sgd(0.1, momentum=jnp.float32(0.9), dampening=jnp.float32(0.0), nesterov=True)
    with pytest.raises(ValueError, match=re.escape("Nesterov momentum needs")):
        jadam.sgd(0.1, momentum=jnp.float32(0.0), nesterov=True)
    params = {"w": jnp.ones(2)}

    def step(momentum, dampening):
        tx = jadam.sgd(0.1, momentum=momentum, dampening=dampening, nesterov=True)
        return tx.update(params, tx.init(params), params)[0]["w"]

    assert jax.jit(step)(0.9, 0.0).shape == (2,)


def test_a_missing_per_step_scalar_names_those_there_are() -> None:
    """A rule reads its per-step scalars as attributes; a misspelt one fails when the step is
    traced, naming the scalars the step has (not a KeyError deep in a dict)."""
    s = jadam.rule.Scalars({"b1": jnp.float32(0.9), "bc1": jnp.float32(0.1)},
                           learning_rate=jnp.float32(1e-3))
    assert float(s.b1) == np.float32(0.9)
    assert float(s.learning_rate) == np.float32(1e-3)
    assert s.weight_decay is None
    with pytest.raises(AttributeError, match=re.escape("'b2'; there are ['b1', 'bc1']")):
        _ = s.b2
