"""One pass over memory (:func:`jadam.one_pass`): a large array's update computed from the old
moments, so that XLA can fuse the parameter's and the moments' loops into one."""

from __future__ import annotations

import os
import warnings
from typing import Any, cast

import jax
import jax.numpy as jnp
from jax import lax

from jadam import checks, quantize
from jadam.codecs.blockwise import Kernel
from jadam.rule import Rule


def one_pass(tx: Any, *, min_size: int = 1 << 20) -> Any:
    """The optimizer ``tx`` with each large array's update computed from the *old* moments,
    so that XLA can update the parameter and the moments in one pass over memory.

    An elementwise optimizer must read the parameter, gradient and moments and write the
    parameter and moments: for Adam in float32, 28 bytes per parameter at least. XLA
    compiles the plain formula (and optax's) into three loops, one per output, the parameter
    loop reading the new moments back: about 40 bytes. Here the rule runs twice on the same
    old inputs, once for the new moments and once, on inputs multiplied by a 1 hidden behind
    ``lax.optimization_barrier`` (exact; it stops XLA from merging the two), for the update.
    With ``optax.apply_updates`` in the same jitted step, all three outputs then read only the
    four inputs, and XLA can fuse them into one loop with three outputs.

    The arithmetic is that of ``tx``, operation for operation. On a CPU without fused
    multiply-add (or with ``XLA_FLAGS=--xla_cpu_max_isa=AVX``) the results are bit for bit
    those of ``tx`` (tested for every optimizer). With FMA, LLVM contracts ``a * b + c * d``
    into ``fma(a, b, c * d)`` or ``fma(c, d, a * b)`` depending on the order in which the loop
    loads its inputs, which differs between the fused loop and the plain ones: the moments
    may then differ by 1 ulp (as ``tx`` itself may differ between two ways of compiling it).

    On CPU, XLA fuses those loops only when the process starts with
    ``XLA_FLAGS=--xla_backend_extra_options=xla_cpu_use_multi_output_fusion`` (set before
    JAX's first computation). Without it the duplicated arithmetic makes the step several
    times *slower*, so on CPU without the flag this returns ``tx`` unchanged, with a warning.
    GPU and TPU fuse sibling loops by default, and on an NVIDIA GPU every elementwise optimizer
    already updates arrays of 2**20 elements or more this way (:func:`automatic`): there this
    wrapper only changes that threshold. What it still adds is the CPU's one pass, with the
    flag: 0.65x optax's time on large leaves (``bench/README.md``).

    Args:
      tx: a jadam optimizer.
      min_size: arrays with fewer elements keep the plain formula (below about a million
        elements the loop count matters little).
    """
    fused = checks.layout_option("jadam.one_pass", tx, min_size, "one_pass_min_size")
    if jax.default_backend() == "cpu" and not _cpu_fuses_siblings():
        warnings.warn(
            "jadam.one_pass: XLA:CPU fuses the update into one pass only with "
            "XLA_FLAGS=--xla_backend_extra_options=xla_cpu_use_multi_output_fusion set "
            "before JAX starts; without it the update would be slower, so it is left as it "
            "is.", stacklevel=2,
        )
        return tx
    return fused


def _cpu_fuses_siblings() -> bool:
    return "xla_cpu_use_multi_output_fusion" in os.environ.get("XLA_FLAGS", "")


def wrap(kernel: Kernel, *, min_size: int) -> Kernel:
    """``kernel`` run twice on arrays of at least ``min_size`` elements (see :func:`one_pass`):
    once for the new moments, once on the same old inputs for the update. A state with 8-bit
    moments is left to ``kernel`` (decoding them is a pass of its own)."""
    def one_pass_kernel(
        rule: Rule, *, g: jax.Array, state: dict[str, Any], **kwargs: Any
    ) -> tuple[jax.Array, dict[str, Any]]:
        if not _applies(g, state, min_size):
            return kernel(rule, g=g, state=state, **kwargs)
        _, new = kernel(rule, g=g, state=state, **kwargs)
        # The same update from the same old inputs, each times a 1 that XLA cannot see
        # through: exact, and it keeps XLA from merging this chain back into the one above.
        # (A barrier around the arrays themselves would do on CPU, but on GPU XLA removes
        # barriers only after fusion, so the two loops would not look like siblings.)
        p = kwargs.pop("p")
        g, p, state = jax.tree.map(_times_opaque_one, (g, p, state))
        update, _ = kernel(rule, g=g, state=state, p=p, **kwargs)
        return update, new

    return one_pass_kernel


#: Platforms on which plain optimizers update large arrays in one pass by default
#: (:func:`automatic`): those where it was measured faster.
AUTOMATIC_PLATFORMS = ("cuda",)
#: The smallest array updated so by default.
AUTOMATIC_MIN_SIZE = 1 << 20


def automatic(kernel: Kernel, *, min_size: int = AUTOMATIC_MIN_SIZE) -> Kernel:
    """``kernel``, with arrays of at least ``min_size`` elements updated as :func:`wrap` does
    where the step is compiled for an NVIDIA GPU, and as they are elsewhere: the default of
    every elementwise optimizer, no flag needed.

    XLA fuses sibling loops on a GPU by default, so there the update from the old moments is
    one pass over memory: on an H200, 3-8% less time than the plain formula and 6-18% less
    than ``optax.adam`` on one leaf of 10M or 50M and on a 40M, 195-leaf transformer tree (one
    run of 3 rounds, ``bench/README.md``). On a CPU the duplicated arithmetic would be slower
    without XLA:CPU's flag (:func:`one_pass`), and TPU has not been measured, so both keep the
    plain formula. The choice is made when the step is
    lowered for its device (``lax.platform_dependent``), not from the default backend, so a
    step compiled for the CPU of a machine with a GPU gets the CPU's loops; the branch not
    taken is not compiled. Compared with the plain formula, the moments may differ by an ulp
    where the GPU contracts a multiply-add differently (as in :func:`one_pass`).
    """
    fused = wrap(kernel, min_size=min_size)

    def automatic_kernel(
        rule: Rule, *, g: jax.Array, state: dict[str, Any], **kwargs: Any
    ) -> tuple[jax.Array, dict[str, Any]]:
        if not _applies(g, state, min_size):
            return kernel(rule, g=g, state=state, **kwargs)

        def plain(g: jax.Array, state: dict[str, Any]) -> tuple[jax.Array, dict[str, Any]]:
            return kernel(rule, g=g, state=state, **kwargs)

        def one(g: jax.Array, state: dict[str, Any]) -> tuple[jax.Array, dict[str, Any]]:
            return fused(rule, g=g, state=state, **kwargs)

        out = lax.platform_dependent(g, state, default=plain,
                                     **dict.fromkeys(AUTOMATIC_PLATFORMS, one))
        return cast(tuple[jax.Array, dict[str, Any]], out)

    return automatic_kernel


def _applies(g: jax.Array, state: dict[str, Any], min_size: int) -> bool:
    """Whether an array is large enough for one pass and its state is not 8- or 4-bit."""
    return g.size >= min_size and not any(quantize.is_quantized(v) for v in state.values())


def _times_opaque_one(x: jax.Array) -> jax.Array:
    return x * lax.optimization_barrier(jnp.ones((), x.dtype))
