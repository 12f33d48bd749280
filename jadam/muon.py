"""Muon (Jordan et al., 2024; Liu et al., 2025): momentum orthogonalised by a Newton-Schulz
iteration on each weight matrix, AdamW on the other parameters, with the matrices' updates
scaled to AdamW's RMS so that the two share a learning rate and a weight decay."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.typing import DTypeLike

from jadam import hyperparams, layout
from jadam.equations import ema, square
from jadam.hyperparams import Scalar, ScalarOrSchedule
from jadam.rule import BiasCorrected, Moments, Scalars, Step, mu_nu

#: Which leaves are matrices for Muon: a function of a leaf's key path and shape.
Matrices = Callable[[Sequence[Any], tuple[int, ...]], bool]

#: The quintic's coefficients of Jordan et al., chosen for the steepest slope at 0 that still
#: brings every singular value into about [0.7, 1.2] in five steps.
NS_COEFFS = (3.4445, -4.7750, 2.0315)


class ScaleByMuonState(NamedTuple):
    """State of :func:`muon`: ``count``; ``mu``, the momentum of every leaf (Muon's sum of
    gradients for a matrix, Adam's first moment for the others); ``nu``, Adam's second moment
    of the leaves that are not matrices, and for a matrix (which keeps none) one 0 of shape
    ``(1, ..., 1)``."""

    count: jax.Array  # type: ignore[assignment]  # optax\'s name, over tuple.count
    mu: optax.Updates
    nu: optax.Updates


def two_dimensional(path: Sequence[Any], shape: tuple[int, ...]) -> bool:
    """The default for :func:`muon`'s ``matrices``: every leaf of two dimensions."""
    del path
    return len(shape) == 2


def newton_schulz(
    x: jax.Array, steps: jax.Array | int, eps: jax.Array | float,
    coeffs: tuple[float, float, float] = NS_COEFFS,
) -> jax.Array:
    r"""The approximate orthogonalisation :math:`U V^\top` of a matrix :math:`X = U S V^\top`:
    :math:`X / (\|X\|_F + \epsilon)`, then ``steps`` times
    :math:`X \leftarrow a X + (b A + c A^2) X` with :math:`A = X X^\mathsf{H}`, on the wider
    orientation (a tall matrix is transposed first and back after: the iteration commutes with
    transposition and its Gram matrix is then the smaller). Each singular value :math:`\sigma`
    goes through the odd polynomial :math:`a\sigma + b\sigma^3 + c\sigma^5`; with Jordan's
    coefficients they end in about [0.7, 1.2], which trains as well as exact orthogonalisation.
    The products run at the highest precision the backend has (no TF32 or bfloat16 passes).

    On a matrix split over a mesh of explicit axes (``jax.sharding.AxisType.Explicit``), the
    split is honoured: along the longer side each step all-reduces the (replicated) Gram
    matrix; along the shorter side, which every step would need whole, the matrix is
    gathered once and the result split again as it came."""
    a, b, c = coeffs
    spec = explicit_spec(x)
    gram_sharding: dict[str, Any] = {}
    if spec is not None:
        if spec[0 if x.shape[0] <= x.shape[1] else 1] is not None:
            whole = jax.sharding.reshard(x, jax.sharding.PartitionSpec())
            return jax.sharding.reshard(newton_schulz(whole, steps, eps, coeffs),
                                        jax.sharding.PartitionSpec(*spec))
        # Split along the longer side only: the Gram matrix sums over the split, replicated.
        gram_sharding = {"out_sharding": jax.sharding.PartitionSpec()}
    tall = x.shape[0] > x.shape[1]
    if tall:
        x = x.T
    x = x / (jnp.sqrt(jnp.sum(square(x))) + eps)

    def iteration(_: Any, x: jax.Array) -> jax.Array:
        gram = jnp.matmul(x, x.conj().T, precision=jax.lax.Precision.HIGHEST, **gram_sharding)
        poly = b * gram + c * jnp.matmul(gram, gram, precision=jax.lax.Precision.HIGHEST)
        return a * x + jnp.matmul(poly, x, precision=jax.lax.Precision.HIGHEST)

    x = jax.lax.fori_loop(0, jnp.asarray(steps).astype(jnp.int32), iteration, x)
    return x.T if tall else x


def explicit_spec(x: jax.Array) -> tuple[Any, ...] | None:
    """The mesh axes each dimension of ``x`` is split over, where its type says
    (``AxisType.Explicit`` axes of the mesh set with ``jax.set_mesh``); ``None`` where it is
    not split over any, or XLA chooses (``Auto`` axes, or no mesh)."""
    spec = getattr(getattr(jax.typeof(x), "sharding", None), "spec", None)
    if spec is None or all(axes is None for axes in spec):
        return None
    return (*spec, *(None,) * (x.ndim - len(spec)))


@dataclasses.dataclass(frozen=True)
class MuonRule(BiasCorrected):
    """Algorithm 1 of Liu et al. for a matrix, AdamW's Algorithm 2 for the other leaves;
    :meth:`for_leaf` decides which a leaf is. A matrix's step reduces over the whole matrix."""

    matrices: Matrices = two_dimensional
    is_matrix: bool = False
    nesterov: bool = True
    rms_matching: bool = True
    ns_coeffs: tuple[float, float, float] = NS_COEFFS
    fn: str = "jadam.muon"
    state_type = ScaleByMuonState
    elementwise = False
    per_path = True

    def for_leaf(self, path: Any, shape: tuple[int, ...]) -> MuonRule:
        if not bool(self.matrices(path, shape)):
            return dataclasses.replace(self, is_matrix=False)
        if len(shape) < 2:
            where = jax.tree_util.keystr(tuple(path)) or "the root"
            raise ValueError(
                f"{self.fn}: matrices() marks the parameter at {where} of shape {shape} as a "
                "matrix; a matrix needs at least two dimensions"
            )
        mu, nu = self.moments
        return dataclasses.replace(
            self, is_matrix=True, moments=(mu, nu._replace(shape=lambda s: (1,) * len(s))))

    def apply(self, s: Scalars, g: jax.Array, state: Moments, p: jax.Array | None) -> Step:
        del p
        if not self.is_matrix:  # AdamW's direction
            mu = ema(state["mu"], g, s.b1)
            nu = ema(state["nu"], square(g), s.b2)
            return (mu / s.bc1) / (jnp.sqrt(nu / s.bc2) + s.eps), {"mu": mu, "nu": nu}
        mu = s.beta * state["mu"] + g
        m = g + s.beta * mu if self.nesterov else mu
        # (fan_in, fan_out): a Flax kernel's last axis is its output, the others its input.
        shape = g.shape
        rows, cols = math.prod(shape[:-1]), shape[-1]
        spec = explicit_spec(m) if len(shape) > 2 else None
        if spec is not None:  # split explicitly: gather before merging the axes, split after
            m = jax.sharding.reshard(m, jax.sharding.PartitionSpec())
        o = newton_schulz(m.reshape(rows, cols), s.ns_steps, s.eps, self.ns_coeffs)
        if spec is not None:
            o = jax.sharding.reshard(o.reshape(shape), jax.sharding.PartitionSpec(*spec))
        scale: jax.Array | float = (
            s.consistent_rms * math.sqrt(max(rows, cols)) if self.rms_matching
            else math.sqrt(max(1.0, cols / max(rows, 1))))
        return scale * o.reshape(shape), {"mu": mu, "nu": state["nu"]}


def scale_by_muon(
    beta: Scalar = 0.95,
    ns_steps: int = 5,
    eps: Scalar = 1e-8,
    *,
    adam_b1: Scalar = 0.9,
    adam_b2: Scalar = 0.999,
    consistent_rms: Scalar | None = 0.2,
    nesterov: bool = True,
    ns_coeffs: tuple[float, float, float] = NS_COEFFS,
    matrices: Matrices | None = None,
    mu_dtype: DTypeLike | None = None,
    nu_dtype: DTypeLike | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Muon's direction (orthogonalised momentum, scaled, on the matrices; Adam's on the other
    leaves) without learning rate, weight decay or sign: the building block of :func:`muon`,
    whose docstring has the math and the arguments.

    Returns:
      An optax ``GradientTransformationExtraArgs`` with state :class:`ScaleByMuonState`.
    """
    fn = hyperparams.call_name("jadam.scale_by_muon")
    hp = {
        "beta": hyperparams.decay_rate(fn, "beta", beta),
        "ns_steps": hyperparams.steps(fn, "ns_steps", ns_steps, minimum=0),
        "eps": hyperparams.scalar(fn, "eps", eps),
        "b1": hyperparams.decay_rate(fn, "adam_b1", adam_b1),
        "b2": hyperparams.decay_rate(fn, "adam_b2", adam_b2),
    }
    if consistent_rms is not None:
        hp["consistent_rms"] = hyperparams.scalar(fn, "consistent_rms", consistent_rms)
    coeffs = tuple(ns_coeffs)
    if len(coeffs) != 3 or not all(
            isinstance(c, (int, float)) and math.isfinite(c) for c in coeffs):
        raise ValueError(
            f"{fn}(ns_coeffs={ns_coeffs!r}): ns_coeffs must be three finite numbers (a, b, c) "
            "of the quintic a x + b x^3 + c x^5"
        )
    if matrices is None:
        matrices = two_dimensional
    if not callable(matrices):
        raise ValueError(
            f"{fn}(matrices={matrices!r}): matrices must be a function of a key path and a "
            "shape, returning whether that leaf is a matrix for Muon"
        )
    rule = MuonRule(hp, mu_nu(fn, mu_dtype, nu_dtype), matrices=matrices,
                    nesterov=bool(nesterov), rms_matching=consistent_rms is not None,
                    ns_coeffs=(float(coeffs[0]), float(coeffs[1]), float(coeffs[2])), fn=fn)
    return layout.per_leaf(rule, fn=fn)


def muon(
    learning_rate: ScalarOrSchedule = 1e-3,
    beta: Scalar = 0.95,
    ns_steps: int = 5,
    eps: Scalar = 1e-8,
    *,
    adam_b1: Scalar = 0.9,
    adam_b2: Scalar = 0.999,
    weight_decay: ScalarOrSchedule = 1e-2,
    consistent_rms: Scalar | None = 0.2,
    nesterov: bool = True,
    ns_coeffs: tuple[float, float, float] = NS_COEFFS,
    matrices: Matrices | None = None,
    others: optax.GradientTransformation | None = None,
    mask: layout.Mask | None = None,
    maximize: bool = False,
    mu_dtype: DTypeLike | None = None,
    nu_dtype: DTypeLike | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Muon: momentum orthogonalised by Newton-Schulz (Jordan et al., 2024), with the update
    RMS matched to AdamW's (Liu et al., 2025).

    For each weight matrix :math:`W \in \mathbb{R}^{A \times B}` (by default every leaf of two
    dimensions; see ``matrices``), with :math:`M_0 = 0`:

    .. math::

        M_t &= \mu M_{t-1} + G_t \\
        O_t &= \mathrm{NS}_5(G_t + \mu M_t) \quad(\text{Nesterov; } \mathrm{NS}_5(M_t)
            \text{ without}) \\
        W_t &= W_{t-1} - \eta_t \big(0.2\, \sqrt{\max(A, B)}\; O_t + \lambda W_{t-1}\big)

    where :math:`\mathrm{NS}_5` is five steps of the Newton-Schulz iteration
    (:func:`newton_schulz`), which maps :math:`G = U S V^\top` to about :math:`U V^\top`: every
    direction the momentum has moves the weights alike. :math:`U V^\top` has RMS
    :math:`1/\sqrt{\max(A, B)}`; the factor 0.2 :math:`\sqrt{\max(A, B)}` gives the update the
    RMS (0.2 to 0.4) that AdamW's has in practice, so Muon takes AdamW's learning rate and
    weight decay, shared with the AdamW that updates every other leaf (biases, norms' scales,
    and whatever ``matrices`` leaves out, such as embeddings and the output layer, which
    Jordan et al. give to AdamW):

    .. math::

        \theta_t = \theta_{t-1} - \eta_t \big(\hat m_t / (\sqrt{\hat v_t} + \epsilon)
            + \lambda \theta_{t-1}\big)

    as :func:`jadam.adamw` with ``adam_b1``, ``adam_b2`` and ``eps``.

    Args:
      learning_rate: :math:`\eta`, a number or schedule, for both parts (AdamW's, thanks to
        the RMS matching; Jordan's unmatched Muon uses about 0.02).
      beta: :math:`\mu`, Muon's momentum, in [0, 1).
      ns_steps: Newton-Schulz steps, an integer >= 0.
      eps: added to the Frobenius norm before the iteration, and AdamW's :math:`\epsilon`.
      adam_b1, adam_b2: AdamW's :math:`\beta_1, \beta_2` for the leaves that are not matrices.
      weight_decay: :math:`\lambda` >= 0, decoupled and scaled by the rate, on every leaf the
        ``mask`` selects (Liu et al. decay the matrices too; they found it needed at scale,
        with 0.1).
      consistent_rms: the RMS-matching factor (Liu et al.'s 0.2); ``None`` for Jordan et al.'s
        scale :math:`\sqrt{\max(1, B / A)}` instead, which needs Muon's own larger rate.
      nesterov: Nesterov momentum, as Jordan et al.'s code and Liu et al.
      ns_coeffs: the quintic's coefficients :math:`(a, b, c)`.
      matrices: which leaves Muon updates: a function of a leaf's key path and shape. ``None``
        (the default) takes every leaf of two dimensions. A leaf of more dimensions it marks
        (a convolution kernel) is orthogonalised as the matrix of its last axis (Flax's output
        features) against all the others.
      others: an optax transformation for the leaves that are not matrices, instead of the
        built-in AdamW (for instance ``jadam.adamw(3e-4)`` with its own rate, or
        ``jadam.lion()``); the state is then optax's ``PartitionState`` of the two.
      mask: where to apply the decay, as in :func:`jadam.adamw`.
      maximize: ascend instead of descending.
      mu_dtype, nu_dtype: the moments' dtypes; default the parameter's.

    Returns:
      An optax ``GradientTransformationExtraArgs`` with state :class:`ScaleByMuonState`
      (``PartitionState`` with ``others``); ``update`` needs ``params`` when the weight decay
      is not 0.

    Example:
      >>> import jax.numpy as jnp, jadam
      >>> params = {"kernel": jnp.ones((4, 3)), "bias": jnp.zeros(3)}
      >>> tx = jadam.muon(1e-3)
      >>> updates, state = tx.update(params, tx.init(params), params)
      >>> state.nu["kernel"].shape  # a matrix keeps no second moment
      (1, 1)

    Complex parameters (see the README's table): the iteration uses the conjugate transpose,
    and maps :math:`U S V^\mathsf{H}` to about :math:`U V^\mathsf{H}`.

    Sharding: each Newton-Schulz step multiplies whole matrices. Split over devices along its
    longer side, a matrix stays split and each step all-reduces only its Gram matrix
    (:math:`\min(A, B)^2` numbers). Split along its shorter side, every step needs it whole:
    under a mesh of explicit axes (``jax.sharding.AxisType.Explicit`` with ``jax.set_mesh``),
    where the traced array says how it is split, Muon gathers the momentum once before the
    iteration and splits the result as the parameter is (a >2-D leaf likewise, before its
    axes are merged); under automatic axes the trace cannot tell, and XLA gathers the matrix,
    its transpose and the Gram matrix at every step: 2.5 times the matrix per step for a
    64x256 or 8x16 kernel split by rows, 12.5 times per update. The leaves that are not
    matrices need no collective (``tests/test_sharding.py``).

    Differences from other libraries: ``optax.contrib.muon(lr, consistent_rms=0.2)`` keeps a
    bias-corrected moving average where Muon's papers keep a sum; the two differ by a
    factor the orthogonalisation removes, so without Nesterov their updates agree (to the
    :math:`\epsilon` of the normalisation). With Nesterov, optax weights the gradient and
    the momentum by their bias corrections (the same direction once :math:`\mu^t` is
    negligible), and its AdamW part becomes NAdam. optax's default has no RMS matching
    (``consistent_rms=None``) and no decay on the other leaves (``adam_weight_decay=0``).

    References:
      Liu, Su, Lu, Tan, Zhang, Wang, Zhang, Yang et al., *Muon is Scalable for LLM Training*,
      arXiv 2025, https://arxiv.org/abs/2502.16982.
      Jordan, Jin, Boza, You, Cesista, Newhouse & Bernstein, *Muon: An optimizer for hidden
      layers in neural networks*, 2024, https://kellerjordan.github.io/posts/muon/.
    """
    fn = "jadam.muon"
    args = dict(locals())
    del args["others"], args["fn"]
    muon_part = layout.alias(fn, scale_by_muon, args, decoupled=True)
    if others is None:
        return muon_part
    if not isinstance(others, optax.GradientTransformation):
        raise ValueError(
            f"{fn}(others={others!r}): others must be an optax transformation for the leaves "
            "that are not matrices, such as jadam.adamw(3e-4)"
        )
    matrix = two_dimensional if matrices is None else matrices

    def labels(params: Any) -> Any:
        return jax.tree_util.tree_map_with_path(
            lambda path, x: "muon" if matrix(path, jnp.shape(x)) else "others", params)

    return optax.partition({"muon": muon_part, "others": others}, labels)
