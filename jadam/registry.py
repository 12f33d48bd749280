"""The registry of jadam's optimizers: build any of them from its name, or list them.

>>> import jadam
>>> tx = jadam.optimizers["adamw"].make(learning_rate=3e-4)
>>> sorted(jadam.optimizers)[:3]
['adabelief', 'adadelta', 'adafactor']
"""

from __future__ import annotations

import inspect
import re
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
from jadam.muon import muon
from jadam.nadam import nadam, nadamw
from jadam.prodigy import prodigy
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
    """

    name: str
    make: Callable[..., optax.GradientTransformationExtraArgs]
    family: str
    summary: str

    @property
    def paper(self) -> str:
        """The paper, as "Authors, *Title*, Venue Year": the first of the constructor's
        References (its docstring is where a citation is written), with more than five authors
        shortened to the first "et al."."""
        return _first_reference(self.make)[0]

    @property
    def url(self) -> str:
        """Where to read the paper (from the same reference)."""
        return _first_reference(self.make)[1]

    @property
    def defaults(self) -> dict[str, Any]:
        """The constructor's arguments that have defaults, with them."""
        return {
            name: p.default
            for name, p in inspect.signature(self.make).parameters.items()
            if p.default is not inspect.Parameter.empty
        }


def _first_reference(make: Callable[..., Any]) -> tuple[str, str]:
    doc = inspect.getdoc(make) or ""
    section = re.search(r"^References:\n((?:  .*\n?)+)", doc, re.MULTILINE)
    if section is None:
        raise ValueError(f"{make.__name__}'s docstring has no References section")
    text = " ".join(line.strip() for line in section.group(1).splitlines())
    found = re.match(r"(.*?),?\s*(https?://\S+?)\.?(?:\s|$)", text)
    if found is None:
        raise ValueError(f"{make.__name__}'s first reference has no address")
    paper, url = found.group(1).strip(), found.group(2)
    authors, rest = paper.split(", *", 1)
    if len(re.split(r", | & ", authors)) > 5:
        authors = authors.split(",")[0] + " et al."
    return f"{authors}, *{rest}", url


_ENTRIES = [
    OptimizerInfo(
        "sgd", sgd, "classic",
        "SGD with momentum (Polyak) or Nesterov momentum, dampening and coupled L2",
    ),
    OptimizerInfo(
        "adadelta", adadelta, "classic",
        "Steps from running averages of squared gradients and squared updates",
    ),
    OptimizerInfo(
        "adagrad", adagrad, "classic",
        "Steps scaled by the root of the sum of all squared gradients",
    ),
    OptimizerInfo(
        "rmsprop", rmsprop, "classic",
        "Steps scaled by a running RMS of gradients; centred (Graves 2013) and momentum options",
    ),
    OptimizerInfo(
        "adam", adam, "adam",
        "Adam, with coupled L2 weight decay, AMSGrad, Nesterov momentum and maximize",
    ),
    OptimizerInfo(
        "adamw", adamw, "adam",
        "Adam with decoupled weight decay (scaled by the learning rate) and a decay mask",
    ),
    OptimizerInfo(
        "amsgrad", amsgrad, "adam",
        "Adam whose second moment never shrinks (the maximum so far)",
    ),
    OptimizerInfo(
        "nadam", nadam, "adam",
        "Adam with Nesterov momentum and torch's momentum schedule (0 gives optax's form)",
    ),
    OptimizerInfo(
        "nadamw", nadamw, "adam",
        "NAdam with decoupled weight decay",
    ),
    OptimizerInfo(
        "radam", radam, "adam",
        "Rectified Adam: momentum SGD until the adaptive rate's variance is tractable",
    ),
    OptimizerInfo(
        "adamax", adamax, "adam",
        "Adam with the infinity norm in place of the second moment",
    ),
    OptimizerInfo(
        "adabelief", adabelief, "adam",
        "Adam whose second moment is the variance of the gradient around its average",
    ),
    OptimizerInfo(
        "yogi", yogi, "adam",
        "Adam with additive, sign-controlled second-moment updates",
    ),
    OptimizerInfo(
        "adafactor", adafactor, "adam",
        "Factored second moments (a row and a column per matrix), relative steps, clipping",
    ),
    OptimizerInfo(
        "lamb", lamb, "adam",
        "Adam plus decay, rescaled per layer by ||weights|| / ||step|| for large batches",
    ),
    OptimizerInfo(
        "adan", adan, "adam",
        "Nesterov momentum estimated from gradient differences, with a proximal decay",
    ),
    OptimizerInfo(
        "lion", lion, "adam",
        "The sign of an interpolated momentum, with decoupled decay (found by program search)",
    ),
    OptimizerInfo(
        "ademamix", ademamix, "adam",
        "Adam plus a slow average of gradients (b3 = 0.9999), with optional warmups",
    ),
    OptimizerInfo(
        "schedule_free_adamw", schedule_free_adamw, "adam",
        "AdamW without a schedule: gradients at an interpolation, an average to evaluate",
    ),
    OptimizerInfo(
        "adam_mini", adam_mini, "adam",
        "AdamW with one second moment per block (head, neuron, token): half the state",
    ),
    OptimizerInfo(
        "mars", mars, "adam",
        "AdamW on a variance-reduced gradient (plus a scaled gradient difference), clipped",
    ),
    OptimizerInfo(
        "cautious_adamw", cautious_adamw, "adam",
        "AdamW stepping only where its direction agrees with the gradient (jadam.cautious)",
    ),
    OptimizerInfo(
        "cautious_lion", cautious_lion, "adam",
        "Lion stepping only where its sign agrees with the gradient (jadam.cautious)",
    ),
    OptimizerInfo(
        "adopt", adopt, "adam",
        "Normalise by the previous step's second moment, then average: converges for any b2 "
        "(proven without its clipping, use_clipping=False)",
    ),
    OptimizerInfo(
        "adam_atan2", adam_atan2, "adam",
        "Adam with atan2(m, sqrt(v)) in place of the division: no eps, scale-invariant",
    ),
    OptimizerInfo(
        "laprop", laprop, "adam",
        "Momentum over the gradient normalised by its RMS: Adam with the two steps swapped",
    ),
    OptimizerInfo(
        "stable_adamw", stable_adamw, "adam",
        "AdamW whose step (decay included) shrinks per tensor where g^2 / v has an RMS over 1",
    ),
    OptimizerInfo(
        "muon", muon, "adam",
        "Newton-Schulz orthogonalised momentum on weight matrices, scaled to AdamW's RMS; "
        "AdamW on the rest",
    ),
    OptimizerInfo(
        "prodigy", prodigy, "adam",
        "Adam with a learned step size, from an estimate of the distance to the solution",
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
