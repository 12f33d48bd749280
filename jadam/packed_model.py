"""A flax NNX model trained with its small parameters packed: one call for the recipe that makes
a many-leaf step about twice as fast (``bench/README.md``).

Every leaf of a parameter tree costs XLA at least one kernel per operation of the step, forward,
backward and optimizer alike. :class:`PackedModel` splits an NNX model, packs its parameters
smaller than ``min_size`` elements into a few flat buffers (:func:`jadam.pack`), and compiles a
training step that differentiates with respect to those buffers: the model sees its ordinary
arrays (sliced from the buffers at runtime offsets, so same-shaped leaves share one kernel), the
gradient comes back as one concatenation per buffer, and the optimizer updates whole buffers.
``model()`` merges the parameters back into an ordinary NNX module for evaluation, saving and
anything else.

The optimizer sees buffers, not leaves, so it must be elementwise (Adam, AdamW, SGD, Lion, ...;
not LAMB, Adam-mini, Adafactor, nor the cautious mask, whose math reduces over each array: a
jadam optimizer of that kind is refused). Weight decay applied only to some parameters is
supported by ``decay``: the decayed and the other leaves go to separate buffers, and the
optimizer is built for the mask over them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import optax
from flax import nnx

from jadam import checks, packing
from jadam.layout import Transformation
from jadam.rule import Rule

__all__ = ["PackedModel"]


class PackedModel:
    """An NNX model whose parameters train packed, with its optimizer and state.

    Args:
      model: the ``flax.nnx`` module. Its parameters are copied out; the module itself is not
        changed by training (call :meth:`model` or :meth:`update` for the trained one).
      tx: an elementwise optax or jadam optimizer; or, with ``decay``, a function of a mask
        returning one, such as ``lambda mask: jadam.adamw(1e-3, mask=mask)``.
      wrt: the variables to train, an NNX filter (default ``nnx.Param``). The others (batch
        statistics, RNG counters) are carried through the step as the model updates them.
      decay: which parameters the optimizer's weight decay applies to: a tree of booleans with
        the parameters' structure, or a function of the parameters returning one (as a jadam
        ``mask``). ``None``: ``tx`` is used as it is.
      min_size: leaves of at least this many elements stay as they are (their kernels are worth
        their launch).

    Example:
      >>> import jax.numpy as jnp, optax, jadam
      >>> from flax import nnx
      >>> model = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
      >>> def loss_fn(model, x, y):
      ...     return jnp.mean((model(x) - y) ** 2)
      >>> trainer = jadam.PackedModel(model, jadam.adam(1e-2))
      >>> loss = trainer.step(loss_fn, jnp.ones((4, 3)), jnp.zeros((4, 2)))
      >>> trained = trainer.model()  # an nnx.Linear, for evaluation or checkpoints
    """

    def __init__(
        self,
        model: nnx.Module,
        tx: optax.GradientTransformation | Callable[[Any], optax.GradientTransformation],
        *,
        wrt: Any = nnx.Param,
        decay: Any = None,
        min_size: int = packing.MIN_SIZE,
    ) -> None:
        # Pure states (arrays, not Variables): a Variable remembers the trace it was made in,
        # and a model merged from them inside the step could not update its batch statistics.
        graphdef, params, rest = nnx.split(model, wrt, ...)  # type: ignore[misc]
        self.graphdef: Any = graphdef
        params, self.rest = nnx.as_pure(params), nnx.as_pure(rest)
        self.wrt = wrt
        leaves, treedef = jax.tree.flatten(params)
        decayed = None
        if decay is not None:
            if not callable(tx) or isinstance(tx, optax.GradientTransformation):
                raise TypeError("jadam.PackedModel: with decay, tx must be a function of the "
                                "mask, such as lambda mask: jadam.adamw(1e-3, mask=mask)")
            mask = decay(params) if callable(decay) else decay
            decayed = [bool(m) for m in checks.flatten_as(
                "jadam.PackedModel", treedef, mask, "decay")]
        plan = packing.make_plan(leaves, treedef, min_size=min_size,
                                 key=(lambda i: None) if decayed is None else decayed.__getitem__)
        self.packed = packing.pack_leaves(plan, leaves)
        self.index = packing.PackIndex.of(plan)
        if decayed is not None:
            tx = tx(_packed_mask(plan, decayed))
        elif not isinstance(tx, optax.GradientTransformation):
            raise TypeError(f"jadam.PackedModel: tx must be an optax optimizer, got {tx!r}")
        _check_elementwise(tx)
        self.tx: optax.GradientTransformation = tx
        self.opt_state = tx.init(self.packed)
        self._steps: dict[tuple[Any, bool], Any] = {}

    def step(self, loss_fn: Callable[..., Any], *batch: Any, has_aux: bool = False) -> Any:
        """One training step: ``loss_fn(model, *batch)`` differentiated with respect to the
        packed parameters, the optimizer's update applied. Returns the loss (with ``has_aux``,
        ``(loss, aux)``, as ``loss_fn`` returns them). The step is compiled once per
        ``loss_fn`` and batch shape, the parameters and optimizer state donated."""
        key = (loss_fn, has_aux)
        if key not in self._steps:
            self._steps[key] = self._jitted(loss_fn, has_aux)
        self.packed, self.opt_state, self.rest, out = self._steps[key](
            self.packed, self.opt_state, self.rest, self.index, *batch)
        return out

    def compile(self, loss_fn: Callable[..., Any], *batch: Any, has_aux: bool = False) -> None:
        """Compiles the step for ``loss_fn`` and batches shaped like ``batch`` (arrays or
        ``jax.ShapeDtypeStruct`` s, with their shardings) ahead of the first :meth:`step`."""
        key = (loss_fn, has_aux)
        self._steps[key] = self._jitted(loss_fn, has_aux).lower(
            self.packed, self.opt_state, self.rest, self.index, *batch).compile()

    def _jitted(self, loss_fn: Callable[..., Any], has_aux: bool) -> Any:
        return jax.jit(functools.partial(_train_step, self.graphdef, self.wrt, self.tx, loss_fn,
                                         has_aux), donate_argnums=(0, 1, 2))

    @property
    def params(self) -> nnx.State:
        """The trained parameters, unpacked, as ``nnx.split(model, wrt)`` gives them.
        Assigning a tree of that structure (restored from a checkpoint, say) packs it."""
        return _unpack(self.packed, self.index)

    @params.setter
    def params(self, tree: Any) -> None:
        self.packed = _pack(self.index, tree)

    def model(self) -> nnx.Module:
        """A new NNX module with the trained parameters (and the other variables)."""
        return nnx.merge(self.graphdef, self.params, self.rest)

    @property
    def state(self) -> dict[str, Any]:
        """Everything training changes, as one pytree of arrays, for checkpoints (orbax or
        :mod:`jadam.checkpoint`): the packed parameters, the optimizer state, the other
        variables. Restore by assigning a tree of the same structure to it, on a
        ``PackedModel`` made from a model of the same structure."""
        return {"params": self.packed, "opt_state": self.opt_state, "rest": self.rest}

    @state.setter
    def state(self, tree: dict[str, Any]) -> None:
        want: Any = jax.tree.structure(self.state)
        if jax.tree.structure(tree) != want:
            raise ValueError(f"jadam.PackedModel: the state to restore has structure "
                             f"{jax.tree.structure(tree)}, this model's is {want}")
        self.packed, self.opt_state, self.rest = tree["params"], tree["opt_state"], tree["rest"]

    def update(self, model: nnx.Module) -> None:
        """Writes the trained parameters and other variables into ``model`` (a module of the
        same structure, such as the one this was made from)."""
        nnx.update(model, self.params, self.rest)


def _train_step(graphdef: Any, wrt: Any, tx: optax.GradientTransformation,
                loss_fn: Callable[..., Any], has_aux: bool, packed: packing.Packed,
                opt_state: Any, rest: Any, index: packing.PackIndex, *batch: Any,
                ) -> tuple[packing.Packed, Any, Any, Any]:
    def loss_of(packed: packing.Packed, rest: Any) -> tuple[Any, tuple[Any, Any]]:
        model = nnx.merge(graphdef, packing.unpack(packed, index), rest)
        out = loss_fn(model, *batch)
        loss, aux = out if has_aux else (out, None)
        _, _, new_rest = nnx.split(model, wrt, ...)  # type: ignore[misc]
        return loss, (aux, nnx.as_pure(new_rest))

    (loss, (aux, rest)), grads = jax.value_and_grad(loss_of, has_aux=True)(packed, rest)
    updates, opt_state = tx.update(grads, opt_state, packed)
    packed = optax.apply_updates(packed, updates)
    return packed, opt_state, rest, ((loss, aux) if has_aux else loss)


@jax.jit
def _unpack(packed: packing.Packed, index: packing.PackIndex) -> Any:
    return packing.unpack(packed, index)


@jax.jit
def _pack(index: packing.PackIndex, tree: Any) -> packing.Packed:
    return packing.pack_leaves(index.plan, index.plan.treedef.flatten_up_to(tree))


def _packed_mask(plan: packing.Plan, decayed: list[bool]) -> Any:
    """The mask over a :class:`jadam.Packed` tree: each buffer decays if its leaves do (the
    plan grouped them by it), each unpacked leaf as given."""
    buffers = tuple(decayed[plan.members(g)[0]] for g in range(len(plan.sizes)))
    leaves = tuple(None if s else d for s, d in zip(plan.slots, decayed, strict=True))
    return packing.Packed(buffers, leaves)  # type: ignore[arg-type]  # (booleans, not arrays)


def _check_elementwise(tx: Any) -> None:
    """Refuses a jadam optimizer whose math reduces over each array (the rule in its recipe
    says so); other optax transformations cannot be inspected and are the caller's to choose."""
    recipe = getattr(tx, "recipe", None)
    if not isinstance(tx, Transformation) or not isinstance(recipe, functools.partial):
        return
    rule = next((a for a in recipe.args if isinstance(a, Rule)), None)
    if rule is not None:
        checks.check_packable(recipe.keywords.get("fn", "the optimizer"), rule,
                              bool(recipe.keywords.get("cautious", False)))

