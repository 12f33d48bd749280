"""jadam: Adam, done right, in JAX.

Optimizers are optax ``GradientTransformation`` s: ``state = tx.init(params)``, then
``updates, state = tx.update(grads, state, params)``. They compose with ``optax.chain``,
``optax.MultiSteps``, optax's clipping, schedules and masks, and ``flax.nnx.Optimizer``.
"""

from jadam.adam import ScaleByAdamState, adam, adamw, scale_by_adam

__version__ = "0.1.0.dev0"

__all__ = [
    "ScaleByAdamState",
    "adam",
    "adamw",
    "scale_by_adam",
]
