"""The registry of jadam's optimizers: build any of them from its name, or list them.

>>> import jadam
>>> tx = jadam.optimizers["adamw"].make(learning_rate=3e-4)
>>> sorted(jadam.optimizers)[:3]
['adabelief', 'adadelta', 'adafactor']
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Mapping
from types import MappingProxyType
from typing import Any, NamedTuple

import optax

from jadam.adabelief import adabelief
from jadam.adadelta import adadelta
from jadam.adafactor import adafactor
from jadam.adagrad import adagrad
from jadam.adam import adam, adamw, amsgrad
from jadam.adam_atan2 import adam_atan2
from jadam.adam_mini import adam_mini
from jadam.adamax import adamax
from jadam.adan import adan
from jadam.ademamix import ademamix
from jadam.adopt import adopt
from jadam.cautious import cautious_adamw, cautious_lion
from jadam.lamb import lamb
from jadam.laprop import laprop
from jadam.lion import lion
from jadam.mars import mars
from jadam.nadam import nadam, nadamw
from jadam.radam import radam
from jadam.rmsprop import rmsprop
from jadam.schedule_free import schedule_free_adamw
from jadam.sgd import sgd
from jadam.stable_adamw import stable_adamw
from jadam.yogi import yogi


class OptimizerInfo(NamedTuple):
    """One optimizer of the registry.

    Attributes:
      name: its name in ``jadam.optimizers`` (and in ``jadam``).
      make: its constructor, e.g. :func:`jadam.adam`.
      family: ``"classic"`` for the methods Adam is compared with, ``"adam"`` for its family.
      summary: what it is, in a line.
      paper: the reference, as "Authors, Title, Venue Year".
      url: where to read the paper.
    """

    name: str
    make: Callable[..., optax.GradientTransformationExtraArgs]
    family: str
    summary: str
    paper: str
    url: str

    @property
    def defaults(self) -> dict[str, Any]:
        """The constructor's arguments that have defaults, with them."""
        return {
            name: p.default
            for name, p in inspect.signature(self.make).parameters.items()
            if p.default is not inspect.Parameter.empty
        }


_ADAM = "Kingma & Ba, *Adam: A Method for Stochastic Optimization*, ICLR 2015"
_ENTRIES = [
    OptimizerInfo(
        "sgd", sgd, "classic",
        "SGD with momentum (Polyak) or Nesterov momentum, dampening and coupled L2",
        "Sutskever, Martens, Dahl & Hinton, *On the importance of initialization and momentum "
        "in deep learning*, ICML 2013",
        "https://proceedings.mlr.press/v28/sutskever13.html",
    ),
    OptimizerInfo(
        "adadelta", adadelta, "classic",
        "Steps from running averages of squared gradients and squared updates",
        "Zeiler, *ADADELTA: An Adaptive Learning Rate Method*, 2012",
        "https://arxiv.org/abs/1212.5701",
    ),
    OptimizerInfo(
        "adagrad", adagrad, "classic",
        "Steps scaled by the root of the sum of all squared gradients",
        "Duchi, Hazan & Singer, *Adaptive Subgradient Methods for Online Learning and "
        "Stochastic Optimization*, JMLR 2011",
        "https://jmlr.org/papers/v12/duchi11a.html",
    ),
    OptimizerInfo(
        "rmsprop", rmsprop, "classic",
        "Steps scaled by a running RMS of gradients; centred (Graves 2013) and momentum options",
        "Tieleman & Hinton, *Lecture 6.5, rmsprop*, Neural Networks for Machine Learning, 2012",
        "https://www.cs.toronto.edu/~tijmen/csc321/slides/lecture_slides_lec6.pdf",
    ),
    OptimizerInfo(
        "adam", adam, "adam",
        "Adam, with coupled L2 weight decay, AMSGrad, Nesterov momentum and maximize",
        _ADAM, "https://arxiv.org/abs/1412.6980",
    ),
    OptimizerInfo(
        "adamw", adamw, "adam",
        "Adam with decoupled weight decay (scaled by the learning rate) and a decay mask",
        "Loshchilov & Hutter, *Decoupled Weight Decay Regularization*, ICLR 2019",
        "https://arxiv.org/abs/1711.05101",
    ),
    OptimizerInfo(
        "amsgrad", amsgrad, "adam",
        "Adam whose second moment never shrinks (the maximum so far)",
        "Reddi, Kale & Kumar, *On the Convergence of Adam and Beyond*, ICLR 2018",
        "https://openreview.net/forum?id=ryQu7f-RZ",
    ),
    OptimizerInfo(
        "nadam", nadam, "adam",
        "Adam with Nesterov momentum and torch's momentum schedule (0 gives optax's form)",
        "Dozat, *Incorporating Nesterov Momentum into Adam*, ICLR 2016 workshop",
        "https://openreview.net/forum?id=OM0jvwB8jIp57ZJjtNEZ",
    ),
    OptimizerInfo(
        "nadamw", nadamw, "adam",
        "NAdam with decoupled weight decay",
        "Dozat, *Incorporating Nesterov Momentum into Adam*, ICLR 2016 workshop",
        "https://openreview.net/forum?id=OM0jvwB8jIp57ZJjtNEZ",
    ),
    OptimizerInfo(
        "radam", radam, "adam",
        "Rectified Adam: momentum SGD until the adaptive rate's variance is tractable",
        "Liu et al., *On the Variance of the Adaptive Learning Rate and Beyond*, ICLR 2020",
        "https://arxiv.org/abs/1908.03265",
    ),
    OptimizerInfo(
        "adamax", adamax, "adam",
        "Adam with the infinity norm in place of the second moment",
        _ADAM + ", Section 7.1", "https://arxiv.org/abs/1412.6980",
    ),
    OptimizerInfo(
        "adabelief", adabelief, "adam",
        "Adam whose second moment is the variance of the gradient around its average",
        "Zhuang et al., *AdaBelief Optimizer: Adapting Stepsizes by the Belief in Observed "
        "Gradients*, NeurIPS 2020",
        "https://arxiv.org/abs/2010.07468",
    ),
    OptimizerInfo(
        "yogi", yogi, "adam",
        "Adam with additive, sign-controlled second-moment updates",
        "Zaheer, Reddi, Sachan, Kale & Kumar, *Adaptive Methods for Nonconvex Optimization*, "
        "NeurIPS 2018",
        "https://papers.nips.cc/paper/8186-adaptive-methods-for-nonconvex-optimization",
    ),
    OptimizerInfo(
        "adafactor", adafactor, "adam",
        "Factored second moments (a row and a column per matrix), relative steps, clipping",
        "Shazeer & Stern, *Adafactor: Adaptive Learning Rates with Sublinear Memory Cost*, "
        "ICML 2018",
        "https://arxiv.org/abs/1804.04235",
    ),
    OptimizerInfo(
        "lamb", lamb, "adam",
        "Adam plus decay, rescaled per layer by ||weights|| / ||step|| for large batches",
        "You et al., *Large Batch Optimization for Deep Learning: Training BERT in 76 "
        "minutes*, ICLR 2020",
        "https://arxiv.org/abs/1904.00962",
    ),
    OptimizerInfo(
        "adan", adan, "adam",
        "Nesterov momentum estimated from gradient differences, with a proximal decay",
        "Xie, Zhou, Li, Lin & Yan, *Adan: Adaptive Nesterov Momentum Algorithm for Faster "
        "Optimizing Deep Models*, IEEE TPAMI 2024",
        "https://arxiv.org/abs/2208.06677",
    ),
    OptimizerInfo(
        "lion", lion, "adam",
        "The sign of an interpolated momentum, with decoupled decay (found by program search)",
        "Chen et al., *Symbolic Discovery of Optimization Algorithms*, NeurIPS 2023",
        "https://arxiv.org/abs/2302.06675",
    ),
    OptimizerInfo(
        "ademamix", ademamix, "adam",
        "Adam plus a slow average of gradients (b3 = 0.9999), with optional warmups",
        "Pagliardini, Ablin & Grangier, *The AdEMAMix Optimizer: Better, Faster, Older*, "
        "ICLR 2025",
        "https://arxiv.org/abs/2409.03137",
    ),
    OptimizerInfo(
        "schedule_free_adamw", schedule_free_adamw, "adam",
        "AdamW without a schedule: gradients at an interpolation, an average to evaluate",
        "Defazio, Yang, Mehta, Mishchenko, Khaled & Cutkosky, *The Road Less Scheduled*, "
        "NeurIPS 2024",
        "https://arxiv.org/abs/2405.15682",
    ),
    OptimizerInfo(
        "adam_mini", adam_mini, "adam",
        "AdamW with one second moment per block (head, neuron, token): half the state",
        "Zhang et al., *Adam-mini: Use Fewer Learning Rates To Gain More*, ICLR 2025",
        "https://arxiv.org/abs/2406.16793",
    ),
    OptimizerInfo(
        "mars", mars, "adam",
        "AdamW on a variance-reduced gradient (plus a scaled gradient difference), clipped",
        "Yuan, Liu, Wu, Zhou & Gu, *MARS: Unleashing the Power of Variance Reduction for "
        "Training Large Models*, ICML 2025",
        "https://arxiv.org/abs/2411.10438",
    ),
    OptimizerInfo(
        "cautious_adamw", cautious_adamw, "adam",
        "AdamW stepping only where its direction agrees with the gradient (jadam.cautious)",
        "Liang, Chen, Liu & Liu, *Cautious Optimizers: Improving Training with One Line of "
        "Code*, 2024",
        "https://arxiv.org/abs/2411.16085",
    ),
    OptimizerInfo(
        "cautious_lion", cautious_lion, "adam",
        "Lion stepping only where its sign agrees with the gradient (jadam.cautious)",
        "Liang, Chen, Liu & Liu, *Cautious Optimizers: Improving Training with One Line of "
        "Code*, 2024",
        "https://arxiv.org/abs/2411.16085",
    ),
    OptimizerInfo(
        "adopt", adopt, "adam",
        "Normalise by the previous step's second moment, then average: converges for any b2 "
        "(proven without its clipping, use_clipping=False)",
        "Taniguchi et al., *ADOPT: Modified Adam Can Converge with Any beta2 with the Optimal "
        "Rate*, NeurIPS 2024",
        "https://arxiv.org/abs/2411.02853",
    ),
    OptimizerInfo(
        "adam_atan2", adam_atan2, "adam",
        "Adam with atan2(m, sqrt(v)) in place of the division: no eps, scale-invariant",
        "Everett et al., *Scaling Exponents Across Parameterizations and Optimizers*, ICML 2024",
        "https://arxiv.org/abs/2407.05872",
    ),
    OptimizerInfo(
        "laprop", laprop, "adam",
        "Momentum over the gradient normalised by its RMS: Adam with the two steps swapped",
        "Ziyin, Wang & Ueda, *LaProp: Separating Momentum and Adaptivity in Adam*, 2020",
        "https://arxiv.org/abs/2002.04839",
    ),
    OptimizerInfo(
        "stable_adamw", stable_adamw, "adam",
        "AdamW whose step (decay included) shrinks per tensor where g^2 / v has an RMS over 1",
        "Wortsman et al., *Stable and low-precision training for large-scale vision-language "
        "models*, NeurIPS 2023",
        "https://arxiv.org/abs/2304.13013",
    ),
]

class Registry(Mapping[str, OptimizerInfo]):
    """Every optimizer in jadam by name (read-only): ``jadam.optimizers["adam"].make(...)``."""

    def __init__(self, entries: list[OptimizerInfo]) -> None:
        self._entries = MappingProxyType({e.name: e for e in entries})

    def __getitem__(self, name: str) -> OptimizerInfo:
        try:
            return self._entries[name]
        except KeyError:
            raise KeyError(
                f"jadam has no optimizer {name!r}; it has {', '.join(self._entries)}"
            ) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"jadam.optimizers({', '.join(self._entries)})"


optimizers = Registry(_ENTRIES)


def markdown_table() -> str:
    """The README's table of optimizers, generated from the registry."""
    rows = ["| optimizer | family | what it is | paper |", "|---|---|---|---|"]
    for e in optimizers.values():
        rows.append(f"| `jadam.{e.name}` | {e.family} | {e.summary} | [{e.paper}]({e.url}) |")
    return "\n".join(rows)
