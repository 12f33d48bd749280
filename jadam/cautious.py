"""Cautious optimizers (Liang et al., 2024): take a step only where it agrees with the current
gradient, a one-line change that keeps the optimizer's guarantees and often speeds it up."""

from __future__ import annotations

from typing import Any

import jax
import optax
from jax.typing import DTypeLike

from jadam import layout
from jadam.adam import scale_by_adam
from jadam.hyperparams import Scalar, ScalarOrSchedule
from jadam.lion import scale_by_lion
from jadam.stages import cautious_mask


def cautious(
    tx: optax.GradientTransformation, *, maximize: bool = False
) -> optax.GradientTransformationExtraArgs:
    r"""The cautious variant of an optimizer (Liang et al., 2024).

    For each array, with :math:`u_t` the optimizer's direction and :math:`g_t` the gradient:

    .. math::

        \phi_t = \mathbb{1}[u_t \circ g_t \ge 0], \qquad
        \theta_t = \theta_{t-1} - \alpha\, \frac{d}{\|\phi_t\|_0 + 1}\, (u_t \circ \phi_t)
            - \alpha \lambda \theta_{t-1}

    where :math:`d` is the array's size: entries whose step would go against the gradient are
    skipped, and the rest scaled up so that the step keeps its size.

    For a jadam optimizer (e.g. ``cautious(jadam.adamw(...))``), the mask applies to the
    optimizer's own direction before the learning rate and weight decay, exactly as in the
    paper (the decay is never masked). Any other optax transformation is wrapped as a whole:
    its update, decay included, is masked against the gradient it was given.

    Args:
      tx: the optimizer to make cautious.
      maximize: for a transformation that is not jadam's, whether it ascends (its updates then
        agree with the gradient when they have the same sign). jadam's optimizers know it.

    Returns:
      An optax ``GradientTransformationExtraArgs`` with the state of ``tx``.

    Example:
      >>> import jax.numpy as jnp, jadam
      >>> params = {"w": jnp.ones(3)}
      >>> tx = jadam.cautious(jadam.adamw(1e-3))
      >>> updates, state = tx.update({"w": jnp.array([1.0, -1.0, 0.0])}, tx.init(params), params)

    Complex parameters (see the README's table): an entry is kept where ``Re(u conj(g)) >= 0``,
    the complex form of ``u g >= 0``. (Lion refuses complex parameters.)

    Differences from other libraries: neither optax nor torch.optim has cautious optimizers;
    the authors release separate cautious copies of AdamW and Lion. Their code scales by
    :math:`1 / \max(\mathrm{mean}(\phi), 10^{-3})`; jadam follows the paper's
    :math:`d / (\|\phi\|_0 + 1)`.

    References:
      Liang, Chen, Liu & Liu, *Cautious Optimizers: Improving Training with One Line of Code*,
      2024, https://arxiv.org/abs/2411.16085.
    """
    with_options = getattr(tx, "with_options", None)
    if with_options is not None:
        return with_options(cautious=True)
    inner = optax.with_extra_args_support(tx)

    def update(
        updates: optax.Updates, state: Any, params: optax.Params | None = None, **extra: Any
    ) -> tuple[optax.Updates, Any]:
        new, state = inner.update(updates, state, params, **extra)
        masked = jax.tree.map(
            lambda u, g: cautious_mask(u, g.astype(u.dtype), negative=not maximize), new, updates
        )
        return masked, state

    return optax.GradientTransformationExtraArgs(inner.init, update)


def cautious_adamw(
    learning_rate: ScalarOrSchedule = 1e-3,
    b1: Scalar = 0.9,
    b2: Scalar = 0.999,
    eps: Scalar = 1e-8,
    *,
    weight_decay: ScalarOrSchedule = 1e-2,
    mask: layout.Mask | None = None,
    maximize: bool = False,
    mu_dtype: DTypeLike | None = None,
    nu_dtype: DTypeLike | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""C-AdamW, Algorithm 2 of Liang et al. (2024): ``cautious(adamw(...))``.

    AdamW's direction :math:`u_t = \hat m_t / (\sqrt{\hat v_t} + \epsilon)` is masked where it
    disagrees with the gradient and rescaled, as in :func:`cautious`; the decoupled decay is
    not masked. The arguments are :func:`jadam.adamw`'s.

    Example:
      >>> import jax.numpy as jnp, jadam
      >>> params = {"w": jnp.ones(2)}
      >>> tx = jadam.cautious_adamw(weight_decay=0.1)
      >>> updates, state = tx.update({"w": jnp.ones(2)}, tx.init(params), params)

    References:
      Liang, Chen, Liu & Liu, *Cautious Optimizers: Improving Training with One Line of Code*,
      2024, https://arxiv.org/abs/2411.16085.
    """
    return layout.alias("jadam.cautious_adamw", scale_by_adam, locals(), decoupled=True,
                        cautious=True)


def cautious_lion(
    learning_rate: ScalarOrSchedule = 1e-4,
    b1: Scalar = 0.9,
    b2: Scalar = 0.99,
    *,
    weight_decay: ScalarOrSchedule = 0.0,
    mask: layout.Mask | None = None,
    maximize: bool = False,
    mu_dtype: DTypeLike | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""C-Lion, Algorithm 3 of Liang et al. (2024): ``cautious(lion(...))``.

    Lion's sign step is masked where it disagrees with the gradient and rescaled, as in
    :func:`cautious`; the decoupled decay is not masked. The arguments are
    :func:`jadam.lion`'s.

    Example:
      >>> import jax.numpy as jnp, jadam
      >>> params = {"w": jnp.ones(2)}
      >>> tx = jadam.cautious_lion()
      >>> updates, state = tx.update({"w": jnp.ones(2)}, tx.init(params), params)

    References:
      Liang, Chen, Liu & Liu, *Cautious Optimizers: Improving Training with One Line of Code*,
      2024, https://arxiv.org/abs/2411.16085.
    """
    return layout.alias("jadam.cautious_lion", scale_by_lion, locals(), decoupled=True,
                        cautious=True)
