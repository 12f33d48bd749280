"""jadam: Adam, done right, in JAX.

Optimizers are optax ``GradientTransformation`` s: ``state = tx.init(params)``, then
``updates, state = tx.update(grads, state, params)``. They compose with ``optax.chain``,
``optax.MultiSteps``, optax's clipping, schedules and masks, and ``flax.nnx.Optimizer``.
"""

from jadam.adabelief import ScaleByBeliefState, adabelief
from jadam.adadelta import ScaleByAdadeltaState, adadelta
from jadam.adagrad import ScaleByAdagradState, adagrad
from jadam.adam import ScaleByAdamState, adam, adamw, amsgrad, scale_by_adam
from jadam.adamax import ScaleByAdamaxState, adamax
from jadam.adopt import ScaleByAdoptState, adopt
from jadam.lion import ScaleByLionState, lion
from jadam.nadam import ScaleByNAdamState, nadam, nadamw
from jadam.radam import ScaleByRAdamState, radam
from jadam.registry import OptimizerInfo, optimizers
from jadam.rmsprop import ScaleByRMSpropState, rmsprop
from jadam.sgd import ScaleBySGDState, sgd
from jadam.yogi import ScaleByYogiState, yogi

__version__ = "0.1.0.dev0"

__all__ = [
    "OptimizerInfo",
    "ScaleByAdadeltaState",
    "ScaleByAdagradState",
    "ScaleByAdamState",
    "ScaleByAdamaxState",
    "ScaleByAdoptState",
    "ScaleByBeliefState",
    "ScaleByLionState",
    "ScaleByNAdamState",
    "ScaleByRAdamState",
    "ScaleByRMSpropState",
    "ScaleBySGDState",
    "ScaleByYogiState",
    "adabelief",
    "adadelta",
    "adagrad",
    "adam",
    "adamax",
    "adamw",
    "adopt",
    "amsgrad",
    "lion",
    "nadam",
    "nadamw",
    "optimizers",
    "radam",
    "rmsprop",
    "scale_by_adam",
    "sgd",
    "yogi",
]
