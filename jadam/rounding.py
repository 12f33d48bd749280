r"""Low-precision parameters that train like float32: where the bits an update loses go.

A bfloat16 parameter keeps 8 significant bits: near 1.0 its values are :math:`2^{-7}` apart, and
an update smaller than half of that (Adam with a learning rate of :math:`10^{-3}`, near the end
of training always) rounds away, so the parameter stops moving although its float32 twin
would still learn. Two wrappers keep what rounding to the nearest value drops:

* :func:`kahan_summation` keeps it: a compensation buffer in the parameter's dtype holds the
  part of each sum that the parameter could not, and adds it back at the next step (Kahan,
  1965, as in Zamirai et al., 2020). In float32 it computes

  .. math::

      x = p + (u + c), \qquad p' = \mathrm{round}(x), \qquad c' = x - p',

  so that :math:`p' + c'` carries the sum to about 16 bits where :math:`p'` has 8;
* :func:`stochastic_rounding` spreads it: :math:`p' = x` rounded up with probability equal to
  the fraction of the gap :math:`x` covers, down otherwise, so that
  :math:`\mathbb{E}[p'] = x`: the parameter moves by the update on average, with no buffer
  (Gupta et al., 2015; Zamirai et al., 2020).

Both wrap any optax transformation (a jadam optimizer, ``optax.chain``, ...) and return
updates in the parameter's dtype chosen so that ``optax.apply_updates(params, updates)``, which
adds them in that dtype and so is what ``flax.nnx.Optimizer`` and every optax loop do, lands
on :math:`p'` exactly: the update is :math:`p' - p`, which is exact in the parameter's format
whenever :math:`p'` is within a factor of two of :math:`p` (Sterbenz's lemma; an update that
changes a parameter more lands within half an ulp of the update from :math:`p'`, and for
Kahan the buffer takes the rest). Leaves other than bfloat16 and float16 (float32, float64,
integers) pass through as their updates came.

References:
  Kahan, *Further remarks on reducing truncation errors*, Communications of the ACM 8(1),
  1965, https://doi.org/10.1145/363707.363723.

  Gupta, Agrawal, Gopalakrishnan & Narayanan, *Deep Learning with Limited Numerical
  Precision*, ICML 2015, https://arxiv.org/abs/1502.02551.

  Zamirai, Zhang, Aberger & De Sa, *Revisiting BFloat16 Training*, 2020,
  https://arxiv.org/abs/2010.06192.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jadam import layout

F32 = jnp.float32


class KahanSummationState(NamedTuple):
    """The state of :func:`kahan_summation`.

    Attributes:
      inner: the wrapped transformation's state.
      compensation: the tree of the parameters: for each float parameter narrower than
        float32, what its last sums lost, in its dtype; ``optax.MaskedNode()`` for the others.
    """

    inner: Any
    compensation: Any


class StochasticRoundingState(NamedTuple):
    """The state of :func:`stochastic_rounding`.

    Attributes:
      inner: the wrapped transformation's state.
      key: the random key's data (``jax.random.key_data``, uint32), fixed for the run.
      count: updates made so far (int32, saturating): each step's random bits come from the
        key folded with it, so a resumed run draws what the uninterrupted one would have.
    """

    inner: Any
    key: jax.Array
    count: jax.Array  # type: ignore[assignment]  # optax's name, over tuple.count


def rounds(x: Any) -> bool:
    """Whether updates to a parameter like ``x`` are rounded by these wrappers: bfloat16
    and float16 ones."""
    return jnp.result_type(x) in (jnp.bfloat16, jnp.float16)


def kahan_summation(tx: optax.GradientTransformation) -> optax.GradientTransformationExtraArgs:
    """``tx`` with Kahan-compensated bfloat16 or float16 parameters: what rounding each sum
    drops is kept in a buffer and added back at the next step (the module docstring has the
    math), so a bfloat16 model follows its float32 twin for 2 bytes more per parameter.

    The returned updates are in each parameter's dtype, and ``optax.apply_updates(params,
    updates)`` gives the compensated parameters bit for bit, in any loop (``nnx.Optimizer``,
    ``TrainState.apply_gradients``). Wrap the whole optimizer, so that the updates it sees are
    the ones the parameters get: ``kahan_summation(optax.chain(clip, jadam.adamw(...)))``, or
    inside ``optax.MultiSteps`` and ``jadam.skip_nonfinite``, which then keep the buffer as it
    was on the steps they hold back.

    Example:
      >>> import jax.numpy as jnp, jadam, optax
      >>> params = {"w": jnp.ones(3, jnp.bfloat16)}
      >>> adam = jadam.adam(1e-3, mu_dtype=jnp.float32, nu_dtype=jnp.float32)
      >>> tx = jadam.kahan_summation(adam)
      >>> state = tx.init(params)
      >>> for _ in range(200):  # a constant gradient: each step is 1e-3, under half an ulp
      ...     updates, state = tx.update({"w": jnp.ones(3, jnp.bfloat16)}, state, params)
      ...     params = optax.apply_updates(params, updates)
      >>> params["w"]  # the bfloat16 nearest 0.8, float32's; without the buffer: 1.0
      Array([0.800781, 0.800781, 0.800781], dtype=bfloat16)

    The moments of a jadam optimizer have the parameters' dtype unless ``mu_dtype`` and
    ``nu_dtype`` say otherwise or :func:`jadam.quantized` stores them: bfloat16 moments
    cannot follow small changes either (here they end the run at 0.805).

    Args:
      tx: any optax gradient transformation.

    Returns:
      An optax ``GradientTransformationExtraArgs`` with state :class:`KahanSummationState`,
      whose ``update`` needs ``params``.
    """
    inner = optax.with_extra_args_support(tx)
    fn = "jadam.kahan_summation"

    def init(params: optax.Params) -> KahanSummationState:
        return KahanSummationState(inner.init(params), jax.tree.map(
            lambda p: jnp.zeros_like(p) if rounds(p) else optax.MaskedNode(), params))

    def update(
        updates: optax.Updates, state: KahanSummationState, params: optax.Params | None = None,
        **extra_args: Any,
    ) -> tuple[optax.Updates, KahanSummationState]:
        _check(fn, state, KahanSummationState, params)
        updates, new_inner = inner.update(updates, state.inner, params, **extra_args)

        def leaf(i: int, p: Any, u: Any, c: Any) -> tuple[Any, Any]:
            del i
            if not rounds(p):
                return u, c
            x = p.astype(F32) + (u.astype(F32) + c.astype(F32))
            update, landed = exact_update(p, nearest(x, p.dtype))
            return update, (x - landed).astype(c.dtype)

        new_updates, compensation = _map_pairs(leaf, params, updates, state.compensation)
        return new_updates, KahanSummationState(new_inner, compensation)

    return layout.rebuildable(init, update, functools.partial(kahan_summation, tx))


def stochastic_rounding(
    tx: optax.GradientTransformation, *, seed: int = 0
) -> optax.GradientTransformationExtraArgs:
    """``tx`` with stochastically rounded bfloat16 or float16 parameters: each new value is
    rounded up or down at random, with the probabilities that make its expectation the exact
    sum (the module docstring has the math), so small updates move a parameter on average
    where rounding to nearest drops them; no buffer, no memory beyond the parameters.

    The returned updates are in each parameter's dtype, and ``optax.apply_updates(params,
    updates)`` gives the rounded parameters bit for bit. The random bits are a function of
    ``seed``, the step count kept in the state, the leaf's position in the tree and the
    element's index: a run is reproducible, and a run resumed from a checkpoint of its state
    is bit for bit the one never interrupted. A value the format holds exactly (a zero
    update) is kept as it is.

    Example:
      >>> import jax.numpy as jnp, jadam, optax
      >>> params = {"w": jnp.ones(1000, jnp.bfloat16)}
      >>> adam = jadam.adam(1e-3, mu_dtype=jnp.float32, nu_dtype=jnp.float32)
      >>> tx = jadam.stochastic_rounding(adam, seed=0)
      >>> state = tx.init(params)
      >>> for _ in range(200):
      ...     updates, state = tx.update({"w": jnp.ones(1000, jnp.bfloat16)}, state, params)
      ...     params = optax.apply_updates(params, updates)
      >>> round(float(params["w"].astype(jnp.float32).mean()), 2)  # float32: 0.8
      0.8

    Args:
      tx: any optax gradient transformation.
      seed: an integer in [0, 2**32) that picks the random bits.

    Returns:
      An optax ``GradientTransformationExtraArgs`` with state
      :class:`StochasticRoundingState`, whose ``update`` needs ``params``.

    Raises:
      ValueError: if ``seed`` is not such an integer.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not (
            0 <= seed < 2**32):
        raise ValueError(f"jadam.stochastic_rounding(seed={seed!r}): seed must be an integer "
                         "in [0, 2**32)")
    inner = optax.with_extra_args_support(tx)
    fn = "jadam.stochastic_rounding"

    def init(params: optax.Params) -> StochasticRoundingState:
        key = jax.random.key_data(jax.random.key(int(seed)))
        return StochasticRoundingState(inner.init(params), key, jnp.zeros([], jnp.int32))

    def update(
        updates: optax.Updates, state: StochasticRoundingState,
        params: optax.Params | None = None, **extra_args: Any,
    ) -> tuple[optax.Updates, StochasticRoundingState]:
        _check(fn, state, StochasticRoundingState, params)
        updates, new_inner = inner.update(updates, state.inner, params, **extra_args)
        step_key = jax.random.fold_in(jax.random.wrap_key_data(state.key), state.count)

        def leaf(i: int, p: Any, u: Any, c: Any) -> tuple[Any, Any]:
            del c
            if not rounds(p):
                return u, None
            seed_i = jax.random.bits(jax.random.fold_in(step_key, i), (), jnp.uint32)
            x = p.astype(F32) + u.astype(F32)
            update, _ = exact_update(p, round_stochastically(x, p.dtype, seed_i))
            return update, None

        new_updates, _ = _map_pairs(leaf, params, updates, None)
        return new_updates, StochasticRoundingState(
            new_inner, state.key, optax.safe_increment(state.count))

    return layout.rebuildable(
        init, update, functools.partial(stochastic_rounding, tx, seed=seed))


def exact_update(p: jax.Array, target: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The update ``u`` in ``p``'s dtype that takes ``p`` to ``target`` (float32 holding a
    value of that dtype) when added in that dtype, as ``optax.apply_updates`` adds, and the
    value ``p + u`` lands on, in float32.

    ``target - p`` is computed in float32 (exact: both have few significant bits) and
    rounded once to the dtype, where it is exact if ``target`` is within a factor of two of
    ``p`` (Sterbenz), so that ``p + u`` is ``target`` whatever precision the addition is
    carried out in. Otherwise ``p + u`` lands within half an ulp of ``u`` (and half of its
    own) from ``target``; callers read where from the second output."""
    p32 = p.astype(F32)
    update = nearest(target - p32, p.dtype)
    # -0.0 where nothing changes: p + -0.0 is p for every p (-0.0 and inf included).
    update = jnp.where(target == p32, jnp.asarray(-0.0, F32), update)
    return update.astype(p.dtype), nearest(p32 + update, p.dtype)


# Every rounding below is explicit (reduce_precision, integer arithmetic on the bits), and
# every value cast to the narrow dtype is one it holds: with excess precision allowed (the
# default), XLA drops a cast to bfloat16 followed by one back to float32, so that
# ``x.astype(bfloat16).astype(float32)`` may be ``x`` inside a jitted program.


def nearest(x: jax.Array, dtype: Any) -> jax.Array:
    """float32 ``x`` rounded to the nearest value of ``dtype`` (bfloat16 or float16; ties to
    even), as float32. ``lax.reduce_precision`` rounds bfloat16's subnormals as a cast does
    but flushes float16's, which are multiples of ``2**-24``: those are rounded as such."""
    fi = jnp.finfo(dtype)
    out = jax.lax.reduce_precision(x, exponent_bits=fi.nexp, mantissa_bits=fi.nmant)
    if fi.minexp > jnp.finfo(F32).minexp:  # a narrower exponent range: float16's subnormals
        scale = F32(2.0 ** (fi.nmant - fi.minexp))
        sub = jax.lax.round(x * scale, jax.lax.RoundingMethod.TO_NEAREST_EVEN) / scale
        out = jnp.where(jnp.abs(x) < F32(fi.smallest_normal), sub, out)
    return out


def round_stochastically(x: jax.Array, dtype: Any, seed: jax.Array) -> jax.Array:
    """float32 ``x`` rounded to ``dtype`` (bfloat16 or float16) up or down at random, away
    from zero with probability equal to the fraction of the gap between its two neighbours
    that ``|x|`` covers, as float32; values ``dtype`` holds exactly, non-finite ones and
    (float16) those beyond its largest stay as rounding to nearest leaves them. ``seed``
    (uint32 scalar) and each element's index give its random bits (:func:`random_bits`).

    On the bits of the float32 magnitude: add a random integer below the bits ``dtype``
    keeps, then cut them off. A carry into the kept bits is a rounding away from zero, with
    probability the cut-off fraction. bfloat16 keeps the top 16 bits of every float32;
    float16 keeps 10 fraction bits, fewer below its smallest normal (``2**-14``), down to
    none at ``2**-24``, and below that its two neighbours are 0 and ``2**-24``."""
    fi = jnp.finfo(dtype)
    raw = jax.lax.bitcast_convert_type(x, jnp.uint32)
    sign, magnitude = raw & jnp.uint32(0x80000000), raw & jnp.uint32(0x7FFFFFFF)
    bits = random_bits(jnp.shape(x), seed)
    if fi.minexp == jnp.finfo(F32).minexp:  # bfloat16: the same exponents, 16 bits cut
        rounded = (magnitude + (bits >> 16)) & jnp.uint32(0xFFFF0000)
    else:
        exponent = (magnitude >> 23).astype(jnp.int32) - 127
        drop = (23 - fi.nmant) + jnp.clip(fi.minexp - exponent, 0, fi.nmant + 1)
        cut = (jnp.uint32(1) << drop.astype(jnp.uint32)) - jnp.uint32(1)
        rounded = (magnitude + (bits & cut)) & ~cut
        # Below the smallest subnormal: 0 or it, up with probability |x| / it.
        smallest = F32(2.0 ** (fi.minexp - fi.nmant))
        below = jnp.abs(x) < smallest
        uniform = (bits >> 8).astype(F32) * F32(2.0**-24)
        tiny = jnp.where(uniform * smallest < jnp.abs(x), smallest, F32(0))
        rounded = jnp.where(below, jax.lax.bitcast_convert_type(tiny, jnp.uint32), rounded)
    out = jax.lax.bitcast_convert_type(sign | rounded, F32)
    keep = jnp.isfinite(x) & (jnp.abs(x) <= F32(fi.max))
    return jnp.where(keep, out, nearest(x, dtype))


def random_bits(shape: tuple[int, ...], seed: jax.Array) -> jax.Array:
    """32 random-looking bits for each element of an array of ``shape``: a hash (Wellons'
    ``lowbias32``, two multiply-xorshift rounds) of the element's index spread by the golden
    ratio and offset by ``seed``. Nine integer operations an element, so 9x faster than
    ``jax.random.bits`` on a CPU (10M elements: 16 ms against 143 ms); the seed comes from
    ``jax.random`` once per leaf and step."""
    x = jax.lax.iota(jnp.uint32, int(np.prod(shape, dtype=np.int64))).reshape(shape)
    x = x * jnp.uint32(0x9E3779B9) + seed
    x = (x ^ (x >> 16)) * jnp.uint32(0x7FEB352D)
    x = (x ^ (x >> 15)) * jnp.uint32(0x846CA68B)
    return x ^ (x >> 16)


def _check(fn: str, state: Any, state_type: type, params: Any) -> None:
    if not isinstance(state, state_type):
        raise TypeError(f"{fn}: update() got a state of type {type(state).__name__}, not the "
                        f"{state_type.__name__} that its init() returns")
    if params is None:
        raise ValueError(f"{fn}: update() needs params (pass tx.update(grads, state, params)): "
                         "the rounded sum is of the parameters and their updates")


def _map_pairs(f: Any, params: Any, updates: Any, extra: Any) -> tuple[Any, Any]:
    """``f(i, p, u, e)`` over the leaves of ``params`` (``i`` the leaf's position, ``updates``
    and ``extra`` of its structure, ``extra`` ``None`` for none), as two trees of its two
    outputs."""
    treedef: Any = jax.tree.structure(params)
    ps = treedef.flatten_up_to(params)
    us = treedef.flatten_up_to(updates)
    es = [None] * len(ps) if extra is None else treedef.flatten_up_to(extra)
    pairs = [f(i, jnp.asarray(p), u, e)
             for i, (p, u, e) in enumerate(zip(ps, us, es, strict=True))]
    return (treedef.unflatten([a for a, _ in pairs]),
            treedef.unflatten([b for _, b in pairs]))
