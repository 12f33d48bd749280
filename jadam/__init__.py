"""jadam: Adam, done right, in JAX.

Optimizers are optax ``GradientTransformation`` s: ``state = tx.init(params)``, then
``updates, state = tx.update(grads, state, params)``. They compose with ``optax.chain``,
``optax.MultiSteps``, optax's clipping, schedules and masks, and ``flax.nnx.Optimizer``.
"""

from typing import Any

from jadam import checkpoint, quantize, tune
from jadam.adabelief import ScaleByBeliefState, adabelief, scale_by_adabelief
from jadam.adadelta import ScaleByAdadeltaState, adadelta, scale_by_adadelta
from jadam.adafactor import ScaleByAdafactorState, adafactor
from jadam.adagrad import ScaleByAdagradState, adagrad, scale_by_adagrad
from jadam.adam import ScaleByAdamState, adam, adamw, amsgrad, scale_by_adam
from jadam.adam_atan2 import ScaleByAdamAtan2State, adam_atan2, scale_by_adam_atan2
from jadam.adam_mini import ScaleByAdamMiniState, adam_mini, adam_mini_partition, scale_by_adam_mini
from jadam.adamax import ScaleByAdamaxState, adamax, scale_by_adamax
from jadam.adan import ScaleByAdanState, adan, scale_by_adan
from jadam.ademamix import ScaleByAdEMAMixState, ademamix, scale_by_ademamix
from jadam.adopt import ScaleByAdoptState, adopt, scale_by_adopt
from jadam.cautious import cautious, cautious_adamw, cautious_lion
from jadam.codecs.blockwise import quantized
from jadam.codecs.packed import PackedState, packed
from jadam.lamb import ScaleByLambState, lamb, scale_by_lamb
from jadam.laprop import ScaleByLaPropState, laprop, scale_by_laprop
from jadam.lion import ScaleByLionState, lion, scale_by_lion
from jadam.mars import ScaleByMarsState, mars, scale_by_mars
from jadam.muon import ScaleByMuonState, muon, scale_by_muon
from jadam.muon import newton_schulz as muon_newton_schulz
from jadam.nadam import ScaleByNAdamState, nadam, nadamw, scale_by_nadam
from jadam.nonfinite import SkipNonfiniteState, skip_nonfinite
from jadam.one_pass import one_pass
from jadam.packing import Packed, PackIndex, pack, unpack
from jadam.prodigy import ProdigyState, prodigy
from jadam.radam import ScaleByRAdamState, radam, scale_by_radam
from jadam.registry import OptimizerInfo, optimizers
from jadam.rmsprop import ScaleByRMSpropState, rmsprop, scale_by_rmsprop
from jadam.rounding import (
    KahanSummationState,
    StochasticRoundingState,
    kahan_summation,
    stochastic_rounding,
)
from jadam.schedule_free import (
    ScaleByScheduleFreeState,
    schedule_free_adamw,
    schedule_free_eval_params,
)
from jadam.sgd import ScaleBySGDState, scale_by_sgd, sgd
from jadam.sharding import state_shardings
from jadam.stable_adamw import ScaleByStableAdamWState, scale_by_stable_adamw, stable_adamw
from jadam.yogi import ScaleByYogiState, scale_by_yogi, yogi

__version__ = "0.1.0.dev0"

__all__ = [
    "KahanSummationState",
    "OptimizerInfo",
    "PackIndex",
    "Packed",
    "PackedModel",
    "PackedState",
    "ProdigyState",
    "ScaleByAdEMAMixState",
    "ScaleByAdadeltaState",
    "ScaleByAdafactorState",
    "ScaleByAdagradState",
    "ScaleByAdamAtan2State",
    "ScaleByAdamMiniState",
    "ScaleByAdamState",
    "ScaleByAdamaxState",
    "ScaleByAdanState",
    "ScaleByAdoptState",
    "ScaleByBeliefState",
    "ScaleByLaPropState",
    "ScaleByLambState",
    "ScaleByLionState",
    "ScaleByMarsState",
    "ScaleByMuonState",
    "ScaleByNAdamState",
    "ScaleByRAdamState",
    "ScaleByRMSpropState",
    "ScaleBySGDState",
    "ScaleByScheduleFreeState",
    "ScaleByStableAdamWState",
    "ScaleByYogiState",
    "SkipNonfiniteState",
    "StochasticRoundingState",
    "adabelief",
    "adadelta",
    "adafactor",
    "adagrad",
    "adam",
    "adam_atan2",
    "adam_mini",
    "adam_mini_partition",
    "adamax",
    "adamw",
    "adan",
    "ademamix",
    "adopt",
    "amsgrad",
    "cautious",
    "cautious_adamw",
    "cautious_lion",
    "checkpoint",
    "kahan_summation",
    "lamb",
    "laprop",
    "lion",
    "mars",
    "muon",
    "muon_newton_schulz",
    "nadam",
    "nadamw",
    "one_pass",
    "optimizers",
    "pack",
    "packed",
    "prodigy",
    "quantize",
    "quantized",
    "radam",
    "rmsprop",
    "scale_by_adabelief",
    "scale_by_adadelta",
    "scale_by_adagrad",
    "scale_by_adam",
    "scale_by_adam_atan2",
    "scale_by_adam_mini",
    "scale_by_adamax",
    "scale_by_adan",
    "scale_by_ademamix",
    "scale_by_adopt",
    "scale_by_lamb",
    "scale_by_laprop",
    "scale_by_lion",
    "scale_by_mars",
    "scale_by_muon",
    "scale_by_nadam",
    "scale_by_radam",
    "scale_by_rmsprop",
    "scale_by_sgd",
    "scale_by_stable_adamw",
    "scale_by_yogi",
    "schedule_free_adamw",
    "schedule_free_eval_params",
    "sgd",
    "skip_nonfinite",
    "stable_adamw",
    "state_shardings",
    "stochastic_rounding",
    "tune",
    "unpack",
    "yogi",
]


def __getattr__(name: str) -> Any:
    # jadam.PackedModel needs flax, imported only when it is asked for.
    if name == "PackedModel":
        from jadam.packed_model import PackedModel
        return PackedModel
    raise AttributeError(f"module 'jadam' has no attribute {name!r}")
