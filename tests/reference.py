"""Independent NumPy float64 references of the optimizers' published algorithms.

Each reference is written from its paper, not from jadam's code: a class with ``init(p)`` giving a
dict of state arrays (named like jadam's state fields, so a test can feed jadam's own state in)
and ``step(state, g, p, t)`` giving the update to add to ``p`` and the new state, for one array,
at the 1-based step ``t``. Everything is float64, or complex128 for complex parameters.

Complex parameters (no paper has them) follow the convention optax adopted: a moment that
averages gradients is complex, a second moment averages ``|g|^2`` (``_sq``), a norm is
``sqrt(sum |x|^2)``, ADOPT clips the modulus, and the cautious mask keeps an entry where
``Re(u conj(g)) >= 0``. For real arrays each of these is the real formula exactly.
"""

from __future__ import annotations

import dataclasses

import numpy as np


def wide(x) -> np.ndarray:
    """``x`` in float64, or in complex128 if it is complex."""
    return np.asarray(x, np.complex128 if np.iscomplexobj(x) else np.float64)


def _sq(x) -> np.ndarray:
    """``|x|^2``: ``x * x`` for real ``x``."""
    return (x * np.conj(x)).real


def gradient(g, p, *, maximize: bool, l2: float = 0.0) -> np.ndarray:
    """The gradient as the algorithms consume it, in float64: negated to maximise (torch's
    convention, applied first), plus a coupled L2 term ``l2 * theta`` (the papers' and torch's
    ``weight_decay`` of the non-decoupled methods)."""
    g = wide(g)
    return (-g if maximize else g) + l2 * wide(p)


@dataclasses.dataclass
class Adam:
    """Adam, Algorithm 1 of Kingma & Ba (2015), with the common extensions.

    * ``weight_decay`` with ``decoupled=False``: the L2 term folded into the gradient, as the
      paper's Section 5 (and torch.optim.Adam) do: g <- g + wd * theta.
    * ``decoupled=True``: AdamW, Algorithm 2 of Loshchilov & Hutter (2019), with the schedule
      multiplier eta_t = learning rate (as torch.optim.AdamW): theta <- theta - lr * wd * theta.
    * ``amsgrad``: Algorithm 2 of Reddi et al. (2018) keeps vmax_t = max(vmax_{t-1}, v_t) and
      divides by its root; bias-corrected by 1 - b2^t as torch.optim.Adam does.
    * ``nesterov``: Dozat (2016), NAdam with a constant momentum: the look-ahead first moment
      b1 m_t / (1 - b1^(t+1)) + (1 - b1) g_t / (1 - b1^t).
    * ``maximize``: the gradient of the objective to maximise is negated first.
    * ``learning_rate=None``: the raw direction m_hat / (sqrt(v_hat + eps_root) + eps), positive.
    """

    learning_rate: float | None = 1e-3
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    eps_root: float = 0.0
    weight_decay: float = 0.0
    decoupled: bool = False
    amsgrad: bool = False
    nesterov: bool = False
    maximize: bool = False

    def init(self, p: np.ndarray) -> dict[str, np.ndarray]:
        zeros = np.zeros(np.shape(p), np.float64)
        state = {"mu": zeros, "nu": zeros.copy()}
        if self.amsgrad:
            state["nu_max"] = zeros.copy()
        return state

    def step(
        self, state: dict[str, np.ndarray], g: np.ndarray, p: np.ndarray, t: int
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        theta = wide(p)
        l2 = 0.0 if self.decoupled else self.weight_decay
        g = gradient(g, p, maximize=self.maximize, l2=l2)

        m = self.b1 * state["mu"] + (1.0 - self.b1) * g
        v = self.b2 * state["nu"] + (1.0 - self.b2) * _sq(g)
        new_state = {"mu": m, "nu": v}
        second = v
        if self.amsgrad:
            second = np.maximum(state["nu_max"], v)
            new_state["nu_max"] = second

        if self.nesterov:
            m_hat = self.b1 * m / (1.0 - self.b1 ** (t + 1)) + (1.0 - self.b1) * g / (
                1.0 - self.b1**t
            )
        else:
            m_hat = m / (1.0 - self.b1**t)
        v_hat = second / (1.0 - self.b2**t)
        direction = m_hat / (np.sqrt(v_hat + self.eps_root) + self.eps)

        if self.learning_rate is None:
            return direction, new_state
        step = -self.learning_rate * direction
        if self.weight_decay and self.decoupled:
            step = step - self.learning_rate * self.weight_decay * theta
        return step, new_state


@dataclasses.dataclass
class SGD:
    """SGD with momentum as in torch.optim.SGD's documented algorithm (Sutskever et al. 2013
    for Nesterov): b_1 = g_1, b_t = momentum b_{t-1} + (1 - dampening) g_t."""

    learning_rate: float = 1e-2
    momentum: float = 0.0
    dampening: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0
    maximize: bool = False

    def init(self, p: np.ndarray) -> dict[str, np.ndarray]:
        return {"trace": np.zeros(np.shape(p))} if self.momentum else {}

    def step(self, state, g, p, t):
        g = gradient(g, p, maximize=self.maximize, l2=self.weight_decay)
        if not self.momentum:
            return -self.learning_rate * g, {}
        first = t == 1  # the buffer starts at the first gradient, undamped
        buf = g.copy() if first else self.momentum * state["trace"] + (1 - self.dampening) * g
        d = g + self.momentum * buf if self.nesterov else buf
        return -self.learning_rate * d, {"trace": buf}


@dataclasses.dataclass
class Adadelta:
    """Algorithm 1 of Zeiler (2012), scaled by a learning rate as torch.optim.Adadelta."""

    learning_rate: float = 1.0
    rho: float = 0.9
    eps: float = 1e-6
    weight_decay: float = 0.0
    maximize: bool = False

    def init(self, p):
        return {"square_avg": np.zeros(np.shape(p)), "acc_delta": np.zeros(np.shape(p))}

    def step(self, state, g, p, t):
        g = gradient(g, p, maximize=self.maximize, l2=self.weight_decay)
        eg2 = self.rho * state["square_avg"] + (1 - self.rho) * _sq(g)
        rms_dx = np.sqrt(state["acc_delta"] + self.eps)
        rms_g = np.sqrt(eg2 + self.eps)
        dx = rms_dx / rms_g * g
        edx2 = self.rho * state["acc_delta"] + (1 - self.rho) * _sq(dx)
        return -self.learning_rate * dx, {"square_avg": eg2, "acc_delta": edx2}


@dataclasses.dataclass
class Adagrad:
    """Diagonal Adagrad (Duchi et al. 2011, eq. for diag(G_t)), with torch.optim.Adagrad's
    lr_decay and initial accumulator."""

    learning_rate: float = 1e-2
    lr_decay: float = 0.0
    initial_accumulator_value: float = 0.0
    eps: float = 1e-10
    weight_decay: float = 0.0
    maximize: bool = False

    def init(self, p):
        return {"sum": np.full(np.shape(p), self.initial_accumulator_value, np.float64)}

    def step(self, state, g, p, t):
        g = gradient(g, p, maximize=self.maximize, l2=self.weight_decay)
        rate = self.learning_rate / (1 + (t - 1) * self.lr_decay)
        acc = state["sum"] + _sq(g)
        return -rate * g / (np.sqrt(acc) + self.eps), {"sum": acc}


@dataclasses.dataclass
class RMSprop:
    """RMSprop (Tieleman & Hinton 2012; centred as Graves 2013 eqs. 38-41), with momentum and
    eps placement as torch.optim.RMSprop documents."""

    learning_rate: float = 1e-2
    decay: float = 0.99
    eps: float = 1e-8
    centered: bool = False
    momentum: float = 0.0
    eps_in_sqrt: bool = False
    weight_decay: float = 0.0
    maximize: bool = False

    def init(self, p):
        state = {"nu": np.zeros(np.shape(p))}
        if self.centered:
            state["mu"] = np.zeros(np.shape(p))
        if self.momentum:
            state["trace"] = np.zeros(np.shape(p))
        return state

    def step(self, state, g, p, t):
        g = gradient(g, p, maximize=self.maximize, l2=self.weight_decay)
        new = {"nu": self.decay * state["nu"] + (1 - self.decay) * _sq(g)}
        var = new["nu"]
        if self.centered:
            new["mu"] = self.decay * state["mu"] + (1 - self.decay) * g
            var = var - _sq(new["mu"])
        denom = np.sqrt(var + self.eps) if self.eps_in_sqrt else np.sqrt(var) + self.eps
        d = g / denom
        if self.momentum:
            d = new["trace"] = self.momentum * state["trace"] + d
        return -self.learning_rate * d, new


@dataclasses.dataclass
class NAdam:
    """NAdam, Algorithm 2 of Dozat (2016) with the momentum schedule
    mu_t = b1 (1 - 0.96^(t psi) / 2) of torch.optim.NAdam's documentation (psi = 0: mu_t = b1)
    and torch's bias-corrected second moment. The running product of mu is carried in the state,
    in float64 here."""

    learning_rate: float = 2e-3
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    momentum_decay: float = 4e-3
    weight_decay: float = 0.0
    decoupled: bool = False
    maximize: bool = False

    def _mu(self, t: int) -> float:
        if self.momentum_decay == 0:
            return self.b1
        return self.b1 * (1.0 - 0.5 * 0.96 ** (t * self.momentum_decay))

    def init(self, p):
        return {"mu": np.zeros(np.shape(p)), "nu": np.zeros(np.shape(p))}

    def step(self, state, g, p, t):
        theta = wide(p)
        l2 = 0.0 if self.decoupled else self.weight_decay
        g = gradient(g, p, maximize=self.maximize, l2=l2)
        prod_t = np.prod([self._mu(i) for i in range(1, t + 1)])
        prod_next = prod_t * self._mu(t + 1)
        m = self.b1 * state["mu"] + (1 - self.b1) * g
        v = self.b2 * state["nu"] + (1 - self.b2) * _sq(g)
        v_hat = v / (1 - self.b2**t)
        m_bar = (1 - self._mu(t)) * g / (1 - prod_t) + self._mu(t + 1) * m / (1 - prod_next)
        step = -self.learning_rate * m_bar / (np.sqrt(v_hat) + self.eps)
        if self.weight_decay and self.decoupled:
            step = step - self.learning_rate * self.weight_decay * theta
        return step, {"mu": m, "nu": v}


@dataclasses.dataclass
class RAdam:
    """RAdam, Algorithm 2 of Liu et al. (2020): SMA length rho_t, the switch at rho_t > 5, and
    the rectification term r_t; the adaptive rate sqrt(1 - b2^t) / (sqrt(v_t) + eps) as in
    torch.optim.RAdam's documentation."""

    learning_rate: float = 1e-3
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.0
    decoupled: bool = False
    maximize: bool = False

    def init(self, p):
        return {"mu": np.zeros(np.shape(p)), "nu": np.zeros(np.shape(p))}

    def step(self, state, g, p, t):
        theta = wide(p)
        l2 = 0.0 if self.decoupled else self.weight_decay
        g = gradient(g, p, maximize=self.maximize, l2=l2)
        m = self.b1 * state["mu"] + (1 - self.b1) * g
        v = self.b2 * state["nu"] + (1 - self.b2) * _sq(g)
        m_hat = m / (1 - self.b1**t)
        rho_inf = 2 / (1 - self.b2) - 1
        rho = rho_inf - 2 * t * self.b2**t / (1 - self.b2**t)
        if rho > 5:
            r = np.sqrt((rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho))
            l_t = np.sqrt(1 - self.b2**t) / (np.sqrt(v) + self.eps)
            step = -self.learning_rate * m_hat * r * l_t
        else:
            step = -self.learning_rate * m_hat
        if self.weight_decay and self.decoupled:
            step = step - self.learning_rate * self.weight_decay * theta
        return step, {"mu": m, "nu": v}


@dataclasses.dataclass
class Adamax:
    """Adamax, Algorithm 2 of Kingma & Ba (2015), with eps inside the max as torch.optim.Adamax
    documents."""

    learning_rate: float = 2e-3
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.0
    maximize: bool = False

    def init(self, p):
        return {"mu": np.zeros(np.shape(p)), "nu": np.zeros(np.shape(p))}

    def step(self, state, g, p, t):
        g = gradient(g, p, maximize=self.maximize, l2=self.weight_decay)
        m = self.b1 * state["mu"] + (1 - self.b1) * g
        u = np.maximum(self.b2 * state["nu"], np.abs(g) + self.eps)
        return -(self.learning_rate / (1 - self.b1**t)) * m / u, {"mu": m, "nu": u}


@dataclasses.dataclass
class Lion:
    """Lion, Program 1 / Algorithm 2 of Chen et al. (2023), decoupled decay scaled by the rate."""

    learning_rate: float = 1e-4
    b1: float = 0.9
    b2: float = 0.99
    weight_decay: float = 0.0
    maximize: bool = False

    def init(self, p):
        return {"mu": np.zeros(np.shape(p))}

    def step(self, state, g, p, t):
        g = gradient(g, p, maximize=self.maximize)
        interpolated = self.b1 * state["mu"] + (1 - self.b1) * g
        step = -self.learning_rate * (np.sign(interpolated)
                                      + self.weight_decay * wide(p))
        return step, {"mu": self.b2 * state["mu"] + (1 - self.b2) * g}


@dataclasses.dataclass
class AdaBelief:
    """AdaBelief, Algorithm 2 of Zhuang et al. (2020): s_t tracks (g_t - m_t)^2 plus eps each
    step; decoupled decay scaled by the rate."""

    learning_rate: float = 1e-3
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-16
    eps_root: float = 1e-16
    weight_decay: float = 0.0
    maximize: bool = False

    def init(self, p):
        return {"mu": np.zeros(np.shape(p)), "nu": np.zeros(np.shape(p))}

    def step(self, state, g, p, t):
        g = gradient(g, p, maximize=self.maximize)
        m = self.b1 * state["mu"] + (1 - self.b1) * g
        s = self.b2 * state["nu"] + (1 - self.b2) * _sq(g - m) + self.eps_root
        m_hat, s_hat = m / (1 - self.b1**t), s / (1 - self.b2**t)
        step = -self.learning_rate * m_hat / (np.sqrt(s_hat) + self.eps)
        step = step - self.learning_rate * self.weight_decay * wide(p)
        return step, {"mu": m, "nu": s}


@dataclasses.dataclass
class Yogi:
    """Yogi, Algorithm 2 of Zaheer et al. (2018), without bias correction, m_0 = 0 and
    v_0 = initial_accumulator_value."""

    learning_rate: float = 1e-2
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-3
    initial_accumulator_value: float = 1e-6
    weight_decay: float = 0.0
    maximize: bool = False

    def init(self, p):
        return {"mu": np.zeros(np.shape(p)),
                "nu": np.full(np.shape(p), self.initial_accumulator_value, np.float64)}

    def step(self, state, g, p, t):
        g = gradient(g, p, maximize=self.maximize, l2=self.weight_decay)
        m = self.b1 * state["mu"] + (1 - self.b1) * g
        v = state["nu"] - (1 - self.b2) * np.sign(state["nu"] - _sq(g)) * _sq(g)
        return -self.learning_rate * m / (np.sqrt(v) + self.eps), {"mu": m, "nu": v}


@dataclasses.dataclass
class Adopt:
    """ADOPT, Algorithms 1 and 2 of Taniguchi et al. (2024): v_0 = g_0^2 at the first step,
    which moves nothing; then normalise by the previous v, clip at (t-1)^(1/4) (Algorithm 2),
    average, step, and only then update v. Decoupled decay scaled by the rate."""

    learning_rate: float = 1e-3
    b1: float = 0.9
    b2: float = 0.9999
    eps: float = 1e-6
    weight_decay: float = 0.0
    nesterov: bool = False
    use_clipping: bool = True
    maximize: bool = False

    def init(self, p):
        return {"mu": np.zeros(np.shape(p)), "nu": np.zeros(np.shape(p))}

    def step(self, state, g, p, t):
        g = gradient(g, p, maximize=self.maximize)
        decay = -self.learning_rate * self.weight_decay * wide(p)
        if t == 1:
            return decay, {"mu": state["mu"], "nu": _sq(g)}
        g_tilde = g / np.maximum(np.sqrt(state["nu"]), self.eps)
        if self.use_clipping:
            bound = (t - 1) ** 0.25
            g_tilde = (g_tilde * np.minimum(1, bound / np.maximum(np.abs(g_tilde), 1e-300))
                       if np.iscomplexobj(g_tilde) else np.clip(g_tilde, -bound, bound))
        m = self.b1 * state["mu"] + (1 - self.b1) * g_tilde
        d = self.b1 * m + (1 - self.b1) * g_tilde if self.nesterov else m
        v = self.b2 * state["nu"] + (1 - self.b2) * _sq(g)
        return -self.learning_rate * d + decay, {"mu": m, "nu": v}


def _norm(x) -> float:
    return float(np.sqrt(np.sum(_sq(x))))


@dataclasses.dataclass
class Lamb:
    """LAMB, Algorithm 2 of You et al. (2020), phi = identity, per array ("layer"): Adam's
    bias-corrected ratio r plus lambda * x, scaled by ||x|| / ||r + lambda x|| (taken as 1 when a
    norm is 0)."""

    learning_rate: float = 1e-3
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-6
    weight_decay: float = 0.01
    maximize: bool = False

    def init(self, p):
        return {"mu": np.zeros(np.shape(p)), "nu": np.zeros(np.shape(p))}

    def step(self, state, g, p, t):
        x = wide(p)
        g = gradient(g, p, maximize=self.maximize)
        m = self.b1 * state["mu"] + (1 - self.b1) * g
        v = self.b2 * state["nu"] + (1 - self.b2) * _sq(g)
        r = (m / (1 - self.b1**t)) / (np.sqrt(v / (1 - self.b2**t)) + self.eps)
        r = r + self.weight_decay * x
        x_norm, r_norm = _norm(x), _norm(r)
        ratio = x_norm / r_norm if x_norm > 0 and r_norm > 0 else 1.0
        return -self.learning_rate * ratio * r, {"mu": m, "nu": v}


@dataclasses.dataclass
class Adan:
    """Adan, Algorithm 1 of Xie et al. (2022), in the authors' code's convention (b_k = 1 - the
    paper's beta_k) with its bias corrections; the first step's gradient difference is 0.
    Weight decay: the paper's proximal step theta <- (theta - lr u) / (1 + lr wd), or with
    ``proximal=False`` theta <- theta (1 - lr wd) - lr u."""

    learning_rate: float = 1e-3
    b1: float = 0.98
    b2: float = 0.92
    b3: float = 0.99
    eps: float = 1e-8
    weight_decay: float = 0.02
    proximal: bool = True
    maximize: bool = False

    def init(self, p):
        zeros = np.zeros(np.shape(p))
        return {"mu": zeros, "mu_diff": zeros.copy(), "nu": zeros.copy(),
                "prev_grad": zeros.copy()}

    def step(self, state, g, p, t):
        x = wide(p)
        g = gradient(g, p, maximize=self.maximize)
        delta = np.zeros_like(g) if t == 1 else g - state["prev_grad"]
        m = self.b1 * state["mu"] + (1 - self.b1) * g
        d = self.b2 * state["mu_diff"] + (1 - self.b2) * delta
        n = self.b3 * state["nu"] + (1 - self.b3) * _sq(g + self.b2 * delta)
        u = (m / (1 - self.b1**t) + self.b2 * d / (1 - self.b2**t)) / (
            np.sqrt(n / (1 - self.b3**t)) + self.eps
        )
        lr, wd = self.learning_rate, self.weight_decay
        proximal = (x - lr * u) / (1 + lr * wd)
        new_x = proximal if self.proximal else x * (1 - lr * wd) - lr * u
        return new_x - x, {"mu": m, "mu_diff": d, "nu": n, "prev_grad": g}


@dataclasses.dataclass
class Mars:
    """MARS-AdamW, Algorithm 2 of Yuan et al. (2024), approximate form: the correction uses the
    previous step's gradient (none at t = 1), c is scaled to unit norm (per array) when longer,
    then AdamW with decay -lr * wd * theta."""

    learning_rate: float = 3e-3
    b1: float = 0.95
    b2: float = 0.99
    eps: float = 1e-8
    gamma: float = 0.025
    weight_decay: float = 0.0
    maximize: bool = False

    def init(self, p):
        zeros = np.zeros(np.shape(p))
        return {"mu": zeros, "nu": zeros.copy(), "prev_grad": zeros.copy()}

    def step(self, state, g, p, t):
        g = gradient(g, p, maximize=self.maximize)
        c = g
        if t > 1:
            c = g + self.gamma * self.b1 / (1 - self.b1) * (g - state["prev_grad"])
        if _norm(c) > 1:
            c = c / _norm(c)
        m = self.b1 * state["mu"] + (1 - self.b1) * c
        v = self.b2 * state["nu"] + (1 - self.b2) * _sq(c)
        u = (m / (1 - self.b1**t)) / (np.sqrt(v / (1 - self.b2**t)) + self.eps)
        step = -self.learning_rate * (u + self.weight_decay * wide(p))
        return step, {"mu": m, "nu": v, "prev_grad": g}


@dataclasses.dataclass
class AdEMAMix:
    """AdEMAMix, Algorithm 1 of Pagliardini et al. (2024): a bias-corrected fast EMA plus alpha
    times an uncorrected slow EMA, over Adam's denominator; decoupled decay scaled by the rate.
    Warmups (the paper's schedulers f_alpha, f_beta3) when given."""

    learning_rate: float = 1e-3
    b1: float = 0.9
    b2: float = 0.999
    b3: float = 0.9999
    alpha: float = 5.0
    eps: float = 1e-8
    alpha_warmup: int | None = None
    b3_warmup: int | None = None
    weight_decay: float = 0.0
    maximize: bool = False

    def init(self, p):
        zeros = np.zeros(np.shape(p))
        return {"mu": zeros, "mu_slow": zeros.copy(), "nu": zeros.copy()}

    def step(self, state, g, p, t):
        g = gradient(g, p, maximize=self.maximize)
        alpha, b3 = self.alpha, self.b3
        if self.alpha_warmup is not None:
            alpha = min(t * self.alpha / self.alpha_warmup, self.alpha)
        if self.b3_warmup is not None:
            s = t / self.b3_warmup
            ln1, ln3 = np.log(self.b1), np.log(self.b3)
            b3 = min(np.exp(ln1 * ln3 / ((1 - s) * ln3 + s * ln1)), self.b3)
        m1 = self.b1 * state["mu"] + (1 - self.b1) * g
        m2 = b3 * state["mu_slow"] + (1 - b3) * g
        v = self.b2 * state["nu"] + (1 - self.b2) * _sq(g)
        u = (m1 / (1 - self.b1**t) + alpha * m2) / (np.sqrt(v / (1 - self.b2**t)) + self.eps)
        step = -self.learning_rate * (u + self.weight_decay * wide(p))
        return step, {"mu": m1, "mu_slow": m2, "nu": v}


@dataclasses.dataclass
class Adafactor:
    """Adafactor, Algorithms 4 (matrices, factored) and 5 (vectors) of Shazeer & Stern (2018)
    with beta1 = 0, in the form torch.optim.Adafactor documents: beta2_t = 1 - t^c, relative
    step rho_t = min(lr, 1/sqrt(t)) times max(eps2, RMS(X)), second moment floored at eps1^2
    (eps1's mean floor for the row factor), update clipped to RMS d, decoupled decay lr*wd*X.
    Arrays of more than two dimensions factor their last two axes."""

    learning_rate: float = 1e-2
    beta2_decay: float = -0.8
    eps1: float = float(np.finfo(np.float32).eps)
    eps2: float = 1e-3
    d: float = 1.0
    weight_decay: float = 0.0
    maximize: bool = False

    def init(self, p):
        shape = np.shape(p)
        if len(shape) >= 2:
            return {"v_row": np.zeros(shape[:-1]), "v_col": np.zeros(shape[:-2] + shape[-1:]),
                    "v": np.zeros((1,))}
        return {"v_row": np.zeros((1,)), "v_col": np.zeros((1,)), "v": np.zeros(shape)}

    def step(self, state, g, p, t):
        x = wide(p)
        g = gradient(g, p, maximize=self.maximize)
        beta2 = 1 - t**self.beta2_decay
        new = dict(state)
        if g.ndim >= 2:
            # Row and column means; a mean over nothing is taken as 0.
            r = beta2 * state["v_row"] + (1 - beta2) * np.sum(_sq(g), axis=-1) / max(
                g.shape[-1], 1)
            c = beta2 * state["v_col"] + (1 - beta2) * np.sum(_sq(g), axis=-2) / max(
                g.shape[-2], 1)
            row_mean = np.sum(r, axis=-1) / max(r.shape[-1], 1)
            denom = np.maximum(row_mean, self.eps1)[..., None, None]
            v_hat = r[..., :, None] * c[..., None, :] / denom
            new.update(v_row=r, v_col=c)
        else:
            v_hat = beta2 * state["v"] + (1 - beta2) * _sq(g)
            new["v"] = v_hat
        u = g / np.sqrt(np.maximum(v_hat, self.eps1**2))
        rms = lambda a: np.sqrt(np.mean(_sq(a))) if a.size else 0.0  # noqa: E731
        rho = min(self.learning_rate, 1 / np.sqrt(t))
        alpha = max(self.eps2, rms(x)) * rho
        clipped = u / max(1.0, rms(u) / self.d)
        return -alpha * clipped - self.learning_rate * self.weight_decay * x, new


@dataclasses.dataclass
class ScheduleFree:
    """Schedule-Free AdamW, Algorithm 1 of Defazio et al. (2024), with the three sequences
    written out: the parameters are y; x is recovered from y = (1 - b1) z + b1 x. The averaging
    weight c_{t+1} = gamma_t^p / sum_{i<=t} gamma_i^p (the paper's p = 2) for the constant
    learning rates the tests use, where gamma_t = lr sqrt(1 - b2^t) min(1, t / warmup)."""

    learning_rate: float = 2.5e-3
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    warmup_steps: int = 0
    weight_lr_power: float = 2.0
    weight_decay: float = 0.0
    maximize: bool = False

    def gamma(self, t):
        warmup = min(1.0, t / self.warmup_steps) if self.warmup_steps else 1.0
        return self.learning_rate * np.sqrt(1 - self.b2**t) * warmup

    def init(self, p):
        return {"z": wide(p).copy(), "nu": np.zeros(np.shape(p))}

    def step(self, state, g, p, t):
        y = wide(p)
        z = state["z"]
        x = (y - (1 - self.b1) * z) / self.b1
        g = gradient(g, p, maximize=self.maximize)
        v = self.b2 * state["nu"] + (1 - self.b2) * _sq(g)
        gamma = self.gamma(t)
        z_next = z - gamma * (g / (np.sqrt(v) + self.eps) + self.weight_decay * y)
        weights = [self.gamma(i) ** self.weight_lr_power for i in range(1, t + 1)]
        c = weights[-1] / sum(weights) if sum(weights) > 0 else 0.0
        x_next = (1 - c) * x + c * z_next
        y_next = (1 - self.b1) * z_next + self.b1 * x_next
        return y_next - y, {"z": z_next, "nu": v}


def _output_neuron_blocks(shape) -> tuple[int, ...]:
    """Adam-mini's blocks for the test trees (no Flax names): one per entry of the last axis of
    a matrix or higher, one per vector or scalar."""
    return tuple(range(len(shape) - 1)) if len(shape) >= 2 else tuple(range(len(shape)))


@dataclasses.dataclass
class AdamMini:
    """Adam-mini, Algorithm 1 of Zhang et al. (2024): per-parameter m, and per block the
    average of g^2 over the block as v; AdamW's bias corrections and decoupled decay."""

    learning_rate: float = 1e-3
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 1e-2
    maximize: bool = False
    blocks: object = _output_neuron_blocks

    def init(self, p):
        shape = np.shape(p)
        axes = self.blocks(shape)
        v_shape = tuple(1 if i in axes else n for i, n in enumerate(shape))
        return {"mu": np.zeros(shape), "nu": np.zeros(v_shape)}

    def step(self, state, g, p, t):
        g = gradient(g, p, maximize=self.maximize)
        axes = self.blocks(np.shape(g))
        m = self.b1 * state["mu"] + (1 - self.b1) * g
        block_mean = np.mean(_sq(g), axis=axes, keepdims=True) if g.size else np.zeros_like(
            state["nu"])
        v = self.b2 * state["nu"] + (1 - self.b2) * block_mean
        u = (m / (1 - self.b1**t)) / (np.sqrt(v / (1 - self.b2**t)) + self.eps)
        step = -self.learning_rate * (u + self.weight_decay * wide(p))
        return step, {"mu": m, "nu": v}


def _cautious(u: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Liang et al. (2024): phi = [Re(u conj(g)) >= 0], and u * phi scaled by d / (nnz(phi) + 1)."""
    phi = ((u * np.conj(g)).real >= 0).astype(np.float64)
    return u * phi * (u.size / (phi.sum() + 1))


@dataclasses.dataclass
class CautiousAdamW:
    """C-AdamW, Algorithm 2 of Liang et al. (2024): AdamW's direction masked and rescaled by
    its agreement with the gradient; the decoupled decay is not masked."""

    learning_rate: float = 1e-3
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 1e-2
    maximize: bool = False

    def init(self, p):
        return {"mu": np.zeros(np.shape(p)), "nu": np.zeros(np.shape(p))}

    def step(self, state, g, p, t):
        g = gradient(g, p, maximize=self.maximize)
        m = self.b1 * state["mu"] + (1 - self.b1) * g
        v = self.b2 * state["nu"] + (1 - self.b2) * _sq(g)
        u = (m / (1 - self.b1**t)) / (np.sqrt(v / (1 - self.b2**t)) + self.eps)
        step = -self.learning_rate * (_cautious(u, g)
                                      + self.weight_decay * wide(p))
        return step, {"mu": m, "nu": v}


@dataclasses.dataclass
class CautiousLion:
    """C-Lion, Algorithm 3 of Liang et al. (2024): Lion's sign step masked and rescaled by its
    agreement with the gradient; the decoupled decay is not masked."""

    learning_rate: float = 1e-4
    b1: float = 0.9
    b2: float = 0.99
    weight_decay: float = 0.0
    maximize: bool = False

    def init(self, p):
        return {"mu": np.zeros(np.shape(p))}

    def step(self, state, g, p, t):
        g = gradient(g, p, maximize=self.maximize)
        u = np.sign(self.b1 * state["mu"] + (1 - self.b1) * g)
        step = -self.learning_rate * (_cautious(u, g)
                                      + self.weight_decay * wide(p))
        return step, {"mu": self.b2 * state["mu"] + (1 - self.b2) * g}


@dataclasses.dataclass
class AdamAtan2:
    """Adam-atan2 of Everett et al. (2024): Adam's bias-corrected moments, the step
    a * atan2(m_hat, b * sqrt(v_hat)) with no eps, decoupled decay scaled by the rate. For a
    complex m_hat, atan2 of its modulus, in its phase."""

    learning_rate: float = 1e-3
    b1: float = 0.9
    b2: float = 0.999
    a: float = 1.27
    b: float = 1.0
    weight_decay: float = 0.0
    maximize: bool = False

    def init(self, p):
        return {"mu": np.zeros(np.shape(p)), "nu": np.zeros(np.shape(p))}

    def step(self, state, g, p, t):
        g = gradient(g, p, maximize=self.maximize)
        m = self.b1 * state["mu"] + (1 - self.b1) * g
        v = self.b2 * state["nu"] + (1 - self.b2) * _sq(g)
        m_hat = m / (1 - self.b1**t)
        root = self.b * np.sqrt(v / (1 - self.b2**t))
        if np.iscomplexobj(m_hat):
            u = self.a * np.exp(1j * np.angle(m_hat)) * np.arctan2(np.abs(m_hat), root)
        else:
            u = self.a * np.arctan2(m_hat, root)
        step = -self.learning_rate * (u + self.weight_decay * wide(p))
        return step, {"mu": m, "nu": v}


@dataclasses.dataclass
class LaProp:
    """LaProp, Algorithm 1 of Ziyin, Wang & Ueda (2020): the gradient divided by the root of
    the bias-corrected second moment (plus eps), averaged into the momentum, whose
    bias-corrected value is the step; decoupled decay scaled by the rate."""

    learning_rate: float = 4e-4
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-15
    weight_decay: float = 0.0
    maximize: bool = False

    def init(self, p):
        return {"mu": np.zeros(np.shape(p)), "nu": np.zeros(np.shape(p))}

    def step(self, state, g, p, t):
        g = gradient(g, p, maximize=self.maximize)
        v = self.b2 * state["nu"] + (1 - self.b2) * _sq(g)
        normalised = g / (np.sqrt(v / (1 - self.b2**t)) + self.eps)
        m = self.b1 * state["mu"] + (1 - self.b1) * normalised
        step = -self.learning_rate * (m / (1 - self.b1**t) + self.weight_decay * wide(p))
        return step, {"mu": m, "nu": v}


@dataclasses.dataclass
class StableAdamW:
    """StableAdamW, Algorithm 2 of Wortsman et al. (2023): AdamW whose rate, for each array, is
    divided by max(1, RMS), RMS = sqrt(mean(g^2 / max(v_hat, eps^2))) of the new second moment;
    the decoupled decay uses the divided rate too. The paper's bias-corrected decay rates
    beta_t = beta (1 - beta^(t-1)) / (1 - beta^t) make its moments m / (1 - beta^t) of the
    usual ones (1 - beta_t = (1 - beta) / (1 - beta^t)); the state here keeps the usual ones."""

    learning_rate: float = 1e-3
    b1: float = 0.9
    b2: float = 0.99
    eps: float = 1e-6
    weight_decay: float = 1e-2
    maximize: bool = False

    def init(self, p):
        return {"mu": np.zeros(np.shape(p)), "nu": np.zeros(np.shape(p))}

    def step(self, state, g, p, t):
        g = gradient(g, p, maximize=self.maximize)
        m = self.b1 * state["mu"] + (1 - self.b1) * g
        v = self.b2 * state["nu"] + (1 - self.b2) * _sq(g)
        m_hat, v_hat = m / (1 - self.b1**t), v / (1 - self.b2**t)
        rms = np.sqrt(np.mean(_sq(g) / np.maximum(v_hat, self.eps**2))) if g.size else 0.0
        rate = self.learning_rate / max(1.0, rms)
        step = -rate * (m_hat / (np.sqrt(v_hat) + self.eps) + self.weight_decay * wide(p))
        return step, {"mu": m, "nu": v}


def _newton_schulz_by_svd(m: np.ndarray, steps: int, eps: float,
                          coeffs=(3.4445, -4.7750, 2.0315)) -> np.ndarray:
    """Jordan et al.'s Newton-Schulz iteration, computed on the singular values: for
    M / (||M||_F + eps) = U S V^H, each X <- a X + b (X X^H) X + c (X X^H)^2 X maps S to
    a S + b S^3 + c S^5 and keeps U and V, so the result is U p(p(...p(S))) V^H."""
    if m.size == 0:
        return np.zeros_like(m)
    x = m / (np.sqrt(np.sum(_sq(m))) + eps)
    u, s, vh = np.linalg.svd(x, full_matrices=False)
    a, b, c = coeffs
    for _ in range(steps):
        s = a * s + b * s**3 + c * s**5
    return (u * s) @ vh


@dataclasses.dataclass
class Muon:
    """Muon, Algorithm 1 of Liu et al. (2025), on the arrays of two dimensions:
    M_t = mu M_{t-1} + G_t, O_t = NS(G_t + mu M_t) with Nesterov (Jordan et al.'s code) or
    NS(M_t), and W_t = W_{t-1} - lr (0.2 sqrt(max(A, B)) O_t + wd W_{t-1}); with
    ``consistent_rms=None``, Jordan et al.'s sqrt(max(1, B / A)) in place of
    0.2 sqrt(max(A, B)). The other arrays: AdamW (Loshchilov & Hutter, Algorithm 2) with
    adam_b1, adam_b2 and eps, the same rate and decay. A matrix keeps a (1, 1) "nu" of zeros,
    as jadam's state does, so that a test can feed that state in."""

    learning_rate: float = 1e-3
    beta: float = 0.95
    ns_steps: int = 5
    eps: float = 1e-8
    adam_b1: float = 0.9
    adam_b2: float = 0.999
    weight_decay: float = 1e-2
    consistent_rms: float | None = 0.2
    nesterov: bool = True
    maximize: bool = False

    def init(self, p):
        shape = np.shape(p)
        nu_shape = (1, 1) if len(shape) == 2 else shape
        return {"mu": np.zeros(shape), "nu": np.zeros(nu_shape)}

    def step(self, state, g, p, t):
        g = gradient(g, p, maximize=self.maximize)
        theta = wide(p)
        if np.ndim(g) != 2:
            adam = Adam(learning_rate=self.learning_rate, b1=self.adam_b1, b2=self.adam_b2,
                        eps=self.eps, weight_decay=self.weight_decay, decoupled=True)
            return adam.step(state, g, p, t)
        rows, cols = np.shape(g)
        m = self.beta * state["mu"] + g
        o = _newton_schulz_by_svd(g + self.beta * m if self.nesterov else m, self.ns_steps,
                                  self.eps)
        if self.consistent_rms is None:
            scale = np.sqrt(max(1.0, cols / max(rows, 1)))
        else:
            scale = self.consistent_rms * np.sqrt(max(rows, cols))
        step = -self.learning_rate * (scale * o + self.weight_decay * theta)
        return step, {"mu": m, "nu": state["nu"]}


@dataclasses.dataclass
class Prodigy:
    """Prodigy, Algorithm 4 of Mishchenko & Defazio (2024), the Adam version, over a whole
    tree (``whole_tree``: the estimate of d is one number for all arrays). Per array,
    m = b1 m + (1 - b1) d g, v = b2 v + (1 - b2) d^2 g^2, s = b3 s + (1 - b3) lr d^2 g; over
    the tree, r = b3 r + (1 - b3) lr d^2 sum <g, x0 - x>, d' = max(d, d_coef r / sum |s|_1);
    the step -lr d (m / (sqrt(v) + d eps) + wd x) uses the old d. ``bias_correction``
    multiplies lr by sqrt(1 - b2^t) / (1 - b1^t) (the authors' option)."""

    learning_rate: float = 1.0
    b1: float = 0.9
    b2: float = 0.999
    b3: float | None = None
    eps: float = 1e-8
    d0: float = 1e-6
    d_coef: float = 1.0
    weight_decay: float = 0.0
    bias_correction: bool = False
    maximize: bool = False
    whole_tree = True

    def init(self, p):
        zeros = np.zeros(np.shape(p), np.result_type(p, np.float64))
        return {"mu": zeros, "nu": np.zeros(np.shape(p)), "s": zeros.copy(),
                "x0": np.array(wide(p))}

    def init_carry(self) -> dict[str, float]:
        return {"d": self.d0, "r": 0.0}

    def step_tree(self, states, carry, grads, params, t):
        b3 = np.sqrt(self.b2) if self.b3 is None else self.b3
        lr = self.learning_rate
        if self.bias_correction:
            lr = lr * np.sqrt(1 - self.b2**t) / (1 - self.b1**t)
        d = carry["d"]
        updates, new_states, inner, l1 = [], [], 0.0, 0.0
        for state, g, p in zip(states, grads, params, strict=True):
            g = gradient(g, p, maximize=self.maximize)
            x = wide(p)
            m = self.b1 * state["mu"] + (1 - self.b1) * d * g
            v = self.b2 * state["nu"] + (1 - self.b2) * d**2 * _sq(g)
            s = b3 * state["s"] + (1 - b3) * lr * d**2 * g
            inner += float(np.sum(np.conj(g) * (state["x0"] - x)).real)
            l1 += float(np.sum(np.abs(s)))
            updates.append(-lr * d * (m / (np.sqrt(v) + d * self.eps) + self.weight_decay * x))
            new_states.append({"mu": m, "nu": v, "s": s, "x0": state["x0"]})
        r = b3 * carry["r"] + (1 - b3) * lr * d**2 * inner
        d_new = max(d, self.d_coef * r / l1) if l1 > 0 else d
        return updates, new_states, {"d": d_new, "r": r}
