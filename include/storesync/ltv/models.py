"""BG/NBD and Gamma-Gamma, fitted by maximum likelihood with numpy/scipy only.

* **BG/NBD** -- Fader, Hardie & Lee (2005), "Counting your customers the easy way: an
  alternative to the Pareto/NBD model", Marketing Science 24(2). Input per customer: ``x``
  (frequency: repeat purchases), ``t_x`` (recency: time from first to last purchase) and ``T``
  (age: time from first purchase to the end of observation), all in one time unit.
* **Gamma-Gamma** -- Fader, Hardie & Lee (2005), "RFM and CLV: using iso-value curves for
  customer base analysis", JMR 42(4). Input per repeat customer: ``x`` and ``m`` (the mean value
  of the repeat purchases). Fitted on customers with ``x > 0`` and ``m > 0`` only.

Both likelihoods are the ones of the papers (and of the ``lifetimes`` package, which the tests use
as an oracle): the objective is ``-sum(w * LL_i) / sum(w) + penalizer * sum(params ** 2)``,
optimised over log-parameters with L-BFGS-B and an **analytic gradient** (digamma terms), so a
fit costs a few dozen vectorised passes over the data; terms that depend on x only (gammaln,
digamma, betaln) are evaluated once per distinct x. ``weights`` lets callers pass a histogram of
identical rows (the warehouse pipeline does: one row per distinct ``(x, t_x, T)``), which makes
fitting cost O(distinct rows), not O(customers).

Predictions are vectorised too:

* ``expected_purchases(t, x, t_x, T)`` -- E[Y(t) | x, t_x, T], the conditional expectation of
  FHL (2005) eq. 10, computed through the Euler transform of its Gauss hypergeometric term,
  ``(1-z)^(r+x) 2F1(r+x, b+x; a+b+x-1; z) = (1-z)^(a-1) 2F1(a+b-1-r, a-1; a+b+x-1; z)``, whose
  second parameter stays small whatever ``x``: no overflow for heavy buyers. When the fit runs
  to the boundary a, b -> infinity (the same drop-out probability for everyone; 2F1 overflows
  once a + b >= 1000) the same expectation is computed by quadrature over p's posterior.
* ``p_alive(x, t_x, T)`` -- P(alive | x, t_x, T), in log space (``expit``).
* ``expected_aov(x, m)`` -- E[M | p, q, v, x, m] = p (v + x m) / (p x + q - 1); for ``x = 0`` it
  is the population mean p v / (q - 1) (undefined, NaN, when q <= 1).
* ``discounted_purchases(...)`` / ``clv(...)`` -- CLV over a horizon = expected AOV times the
  expected purchases in each discount period, divided by (1 + rate)^k for period k (cash at the
  end of each period, the ``lifetimes`` convention); rate 0 gives E[Y(horizon)] * AOV.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy.optimize import minimize
from scipy.special import betaln, digamma, expit, gammaln, hyp2f1

from storesync.core.errors import StoresyncError

__all__ = [
    "BgNbdParams",
    "GammaGammaParams",
    "LtvFitError",
    "bgnbd_log_likelihood",
    "clv",
    "discounted_purchases",
    "fit_bgnbd",
    "fit_gamma_gamma",
    "gamma_gamma_log_likelihood",
]

_LOG_BOUND = 25.0  # |log(param)| cap: exp(25) ~ 7e10, far outside any sensible fit
_GRAD_TOL = 1e-5  # max |gradient| (mean log-likelihood, log-params) accepted as converged
_CLOSED_FORM_MAX_AB = 1000.0  # beyond, scipy's hyp2f1 overflows: expected purchases by quadrature
_HERMITE = np.polynomial.hermite.hermgauss(48)


class LtvFitError(StoresyncError):
    """A model could not be fitted (no data, no repeat buyers, no convergence)."""


# --------------------------------------------------------------------------------------- helpers
def _as_arrays(*arrays, weights=None):
    out = [np.asarray(a, dtype=float).ravel() for a in arrays]
    n = out[0].size
    if any(a.size != n for a in out):
        raise ValueError("input arrays differ in length")
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=float).ravel()
    if w.size != n:
        raise ValueError("weights differ in length from the data")
    return out, w


def _minimize(objective, x0: np.ndarray, maxiter: int = 2000):
    bounds = [(-_LOG_BOUND, _LOG_BOUND)] * len(x0)
    with np.errstate(all="ignore"):
        res = minimize(
            objective,
            x0,
            jac=True,
            method="L-BFGS-B",
            bounds=bounds,
            options={"maxiter": maxiter, "ftol": 1e-14, "gtol": 1e-9, "maxcor": 20},
        )
        fun, grad = objective(res.x)
    converged = bool(np.isfinite(fun) and (res.success or np.max(np.abs(grad)) < _GRAD_TOL))
    return res, float(fun), converged


# -------------------------------------------------------------------------------------- BG/NBD
def _bgnbd_terms(log_params, x, t_x, T):
    r, alpha, a, b = np.exp(log_params)
    has_repeat = x > 0
    A1 = gammaln(r + x) - gammaln(r) + r * math.log(alpha)
    A2 = betaln(a, b + x) - betaln(a, b)  # = lnG(a+b) + lnG(b+x) - lnG(b) - lnG(a+b+x)
    A3 = -(r + x) * np.log(alpha + T)
    A4 = np.where(
        has_repeat,
        math.log(a) - np.log(b + np.maximum(x, 1.0) - 1.0) - (r + x) * np.log(alpha + t_x),
        -np.inf,
    )
    mx = np.maximum(A3, A4)
    e3 = np.exp(A3 - mx)
    e4 = np.exp(A4 - mx)
    ll = A1 + A2 + mx + np.log(e3 + e4)
    w4 = e4 / (e3 + e4)  # share of the "alive, last seen at t_x" branch (0 when x == 0)
    return (r, alpha, a, b), ll, w4


def bgnbd_log_likelihood(params, x, t_x, T) -> np.ndarray:
    """Per-customer BG/NBD log-likelihood at ``params = (r, alpha, a, b)``."""
    (x, t_x, T), _ = _as_arrays(x, t_x, T)
    _, ll, _ = _bgnbd_terms(np.log(np.asarray(params, dtype=float)), x, t_x, T)
    return ll


class _BgNbdData:
    """The fit's data, arranged so one objective evaluation costs a few passes over the rows:
    terms that depend on x only are computed once per distinct x (weighted by its customers), and
    customers without repeat purchases (the log-sum-exp degenerates to one term) are apart."""

    def __init__(self, x, t_x, T, w):
        self.wsum = float(w.sum())
        self.ux, inv = np.unique(x, return_inverse=True)
        self.W = np.bincount(inv, weights=w, minlength=self.ux.size)  # customers per distinct x
        zero = x == 0
        self.T0, self.w0 = T[zero], w[zero]
        rep = ~zero
        self.x1, self.tx1, self.T1, self.w1 = x[rep], t_x[rep], T[rep], w[rep]
        self.inv1 = inv[rep]
        self.nu = self.ux.size


def _bgnbd_objective(log_params, data: _BgNbdData, penalizer):
    r, alpha, a, b = np.exp(log_params)
    ux, W, wsum = data.ux, data.W, data.wsum
    ab = a + b
    # per distinct x: lnG(r+x) - lnG(r) + lnB(a, b+x) - lnB(a, b)
    per_x = gammaln(r + ux) - gammaln(r) + betaln(a, b + ux) - betaln(a, b)
    log_bx1 = np.log(b + np.maximum(ux, 1.0) - 1.0)
    # customers without repeats: A3 only
    L0 = np.log(alpha + data.T0)
    # repeat customers: log(exp(A3) + exp(A4)) = A3 + log1p(exp(A4 - A3))
    rx = r + data.x1
    LT = np.log(alpha + data.T1)
    Ltx = np.log(alpha + data.tx1)
    A3 = -rx * LT
    diff = (math.log(a) - log_bx1[data.inv1]) - rx * (Ltx - LT)  # A4 - A3
    w4 = expit(diff)
    w3 = 1.0 - w4
    ll = (
        W @ per_x
        + wsum * r * math.log(alpha)
        - r * (data.w0 @ L0)
        + data.w1 @ (A3 + np.logaddexp(0.0, diff))
    )
    ww3, ww4 = data.w1 * w3, data.w1 * w4
    dig_ab = digamma(ab) - digamma(ab + ux)
    d_r = W @ (digamma(r + ux) - digamma(r)) + wsum * math.log(alpha) - data.w0 @ L0 - ww3 @ LT - ww4 @ Ltx
    d_alpha = wsum * r / alpha - r * (data.w0 @ (1.0 / (alpha + data.T0))) - (
        (ww3 * rx) @ (1.0 / (alpha + data.T1)) + (ww4 * rx) @ (1.0 / (alpha + data.tx1))
    )
    sum_w4 = float(ww4.sum())
    d_a = W @ dig_ab + sum_w4 / a
    w4_per_x = np.bincount(data.inv1, weights=ww4, minlength=data.nu)
    d_b = W @ (dig_ab + digamma(b + ux) - digamma(b)) - w4_per_x @ (1.0 / np.exp(log_bx1))
    params = np.array([r, alpha, a, b])
    grad_params = np.array([d_r, d_alpha, d_a, d_b])
    value = -ll / wsum + penalizer * np.sum(params**2)
    grad = -(grad_params * params) / wsum + 2.0 * penalizer * params**2
    if not (np.isfinite(value) and np.all(np.isfinite(grad))):
        return np.inf, np.zeros(4)
    return float(value), grad


@dataclass(frozen=True)
class BgNbdParams:
    """Fitted BG/NBD parameters (time unit: whatever the data was in) and fit diagnostics."""

    r: float
    alpha: float
    a: float
    b: float
    log_likelihood: float = float("nan")  # total (weighted) log-likelihood at the optimum
    n_customers: float = 0
    penalizer: float = 0.0
    converged: bool = True
    iterations: int = 0

    def as_dict(self) -> dict:
        return asdict(self)

    # ---- predictions -------------------------------------------------------------------------
    def p_alive(self, x, t_x, T) -> np.ndarray:
        """P(customer still alive at T | x, t_x, T); 1 for customers without repeat purchases."""
        x, t_x, T = (np.asarray(v, dtype=float) for v in (x, t_x, T))
        r, alpha, a, b = self.r, self.alpha, self.a, self.b
        xb = np.maximum(x, 1.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            log_odds_dead = math.log(a) - np.log(b + xb - 1.0) + (r + x) * (
                np.log(alpha + T) - np.log(alpha + t_x)
            )
        return np.where(x > 0, expit(-log_odds_dead), 1.0)

    def expected_purchases(self, t, x, t_x, T) -> np.ndarray:
        """E[number of purchases in (T, T + t] | x, t_x, T] (FHL 2005, eq. 10).

        Closed form through the Gauss hypergeometric function while a + b < 1000; beyond (the fit
        went to the boundary where p, the drop-out probability, is the same for everyone, and
        2F1 overflows) the same expectation by quadrature over p's posterior (see
        ``_expected_purchases_quadrature``)."""
        t, x, t_x, T = np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in (t, x, t_x, T)))
        r, alpha, b = self.r, self.alpha, self.b
        a = self.a
        if abs(a - 1.0) < 1e-9:  # removable singularity of the closed form at a == 1
            a = 1.0 + math.copysign(1e-9, a - 1.0)
        if a + b < _CLOSED_FORM_MAX_AB:
            c = a + b + x - 1.0
            z = t / (alpha + T + t)
            with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
                hyp = hyp2f1(a + b - 1.0 - r, a - 1.0, c, z)
                log1mz = np.log1p(-z)
                # 1 - (1-z)^(a-1) * 2F1(...), precisely even when (a-1) log(1-z) is tiny
                bracket = np.where(
                    hyp > 0,
                    -np.expm1((a - 1.0) * log1mz + np.log(np.where(hyp > 0, hyp, 1.0))),
                    1.0 - np.exp((a - 1.0) * log1mz) * hyp,
                )
                alive_value = c / (a - 1.0) * bracket
            bad = ~np.isfinite(alive_value) & (t > 0)
            if np.any(bad):
                alive_value = np.where(bad, 0.0, alive_value)
                alive_value[bad] = self._expected_purchases_quadrature(t[bad], x[bad], T[bad])
        else:
            alive_value = self._expected_purchases_quadrature(t, x, T)
        return np.where(t > 0, alive_value * self.p_alive(x, t_x, T), 0.0)

    def _expected_purchases_quadrature(self, t, x, T) -> np.ndarray:
        """E[purchases in (T, T+t] | alive] = E_p[(1 - (1 + p t / (alpha + T))^-(r + x)) / p] with
        p ~ Beta(a, b + x) (lambda integrated out in closed form): Gauss-Hermite nodes around
        p's mean, self-normalised importance weights with the exact Beta density. For large
        a + b only (p's posterior is then narrow and near-normal)."""
        t, x, T = (np.asarray(v, dtype=float).ravel() for v in (t, x, T))
        out = np.empty(t.size)
        nodes, weights = _HERMITE
        a, r, alpha = self.a, self.r, self.alpha
        for start in range(0, t.size, 50_000):
            sl = slice(start, start + 50_000)
            bx = self.b + x[sl][:, None]
            mean = a / (a + bx)
            sd = np.sqrt(mean * (1.0 - mean) / (a + bx + 1.0))
            p = mean + sd * math.sqrt(2.0) * nodes[None, :]
            inside = (p > 0) & (p < 1)
            p = np.clip(p, 1e-300, 1 - 1e-16)
            log_beta = (a - 1.0) * np.log(p) + (bx - 1.0) * np.log1p(-p)
            log_normal = -0.5 * ((p - mean) / sd) ** 2
            log_ratio = np.where(inside, log_beta - log_normal, -np.inf)
            log_ratio -= log_ratio.max(axis=1, keepdims=True)
            w = weights[None, :] * np.exp(log_ratio)
            g = -np.expm1(-(r + x[sl][:, None]) * np.log1p(p * t[sl][:, None] / (alpha + T[sl][:, None]))) / p
            out[sl] = (w * g).sum(axis=1) / w.sum(axis=1)
        return out


def fit_bgnbd(x, t_x, T, weights=None, *, penalizer: float = 0.0, initial=None) -> BgNbdParams:
    """Maximum-likelihood BG/NBD on per-customer (or weighted, distinct-row) summaries.

    ``x`` is the number of repeat purchases, ``t_x`` the time between first and last purchase,
    ``T`` the time between the first purchase and the end of observation (same unit). ``weights``
    counts how many customers each row stands for. ``penalizer`` adds ``penalizer * sum(params**2)``
    to the mean negative log-likelihood (as ``lifetimes`` does).
    """
    (x, t_x, T), w = _as_arrays(x, t_x, T, weights=weights)
    keep = w > 0
    x, t_x, T, w = x[keep], t_x[keep], T[keep], w[keep]
    if x.size == 0:
        raise LtvFitError("BG/NBD: no customers to fit")
    if np.any(x < 0) or np.any(t_x < 0) or np.any(t_x > T + 1e-9) or np.any((x > 0) & (t_x <= 0)):
        raise LtvFitError(
            "BG/NBD: need frequency >= 0 and 0 <= recency <= T (recency > 0 when frequency > 0)"
        )
    if not np.any(x > 0):
        raise LtvFitError("BG/NBD: no customer made a repeat purchase; the model is not identified")
    wsum = float(w.sum())
    if initial is None:
        mean_T = float((w @ T) / wsum)
        starts = [np.log([1.0, max(mean_T, 1e-3) / 10.0, 1.0, 1.0]), np.zeros(4)]
    else:
        starts = [np.log(np.asarray(initial, dtype=float))]
    data = _BgNbdData(x, t_x, T, w)
    best = None
    for x0 in starts:
        res, fun, converged = _minimize(lambda p: _bgnbd_objective(p, data, penalizer), x0)
        if best is None or (converged, -fun) > (best[2], -best[1]):
            best = (res, fun, converged)
        if converged:
            break
    res, fun, converged = best
    r, alpha, a, b = (float(v) for v in np.exp(res.x))
    ll = float(-(fun - penalizer * (r * r + alpha * alpha + a * a + b * b)) * wsum)
    if not all(np.isfinite([r, alpha, a, b])):
        raise LtvFitError("BG/NBD: the fit diverged; try a small penalizer (e.g. 0.001)")
    return BgNbdParams(r, alpha, a, b, ll, wsum, penalizer, converged, int(res.nit))


# --------------------------------------------------------------------------------- Gamma-Gamma
def _gg_terms(log_params, x, m):
    p, q, v = np.exp(log_params)
    px = p * x
    ll = (
        gammaln(px + q)
        - gammaln(px)
        - gammaln(q)
        + q * math.log(v)
        + (px - 1.0) * np.log(m)
        + px * np.log(x)
        - (px + q) * np.log(x * m + v)
    )
    return (p, q, v), ll


def gamma_gamma_log_likelihood(params, x, m) -> np.ndarray:
    """Per-customer Gamma-Gamma log-likelihood at ``params = (p, q, v)`` (x > 0, m > 0)."""
    (x, m), _ = _as_arrays(x, m)
    return _gg_terms(np.log(np.asarray(params, dtype=float)), x, m)[1]


class _GammaGammaData:
    """Gamma-Gamma data: x-only terms per distinct x, the rest as weighted sums per row."""

    def __init__(self, x, m, w):
        self.wsum = float(w.sum())
        self.ux, inv = np.unique(x, return_inverse=True)
        self.W = np.bincount(inv, weights=w, minlength=self.ux.size)
        self.log_ux = np.log(self.ux)
        log_m = np.log(m)
        self.sum_w_log_m = float(w @ log_m)
        self.sum_wx_log_m = float((w * x) @ log_m)
        self.xm = x * m
        self.w, self.wx = w, w * x


def _gg_objective(log_params, data: _GammaGammaData, penalizer):
    p, q, v = np.exp(log_params)
    ux, W, wsum = data.ux, data.W, data.wsum
    pu = p * ux
    L = np.log(data.xm + v)
    inv_xmv = 1.0 / (data.xm + v)
    sum_wx_L, sum_w_L = float(data.wx @ L), float(data.w @ L)
    ll = (
        W @ (gammaln(pu + q) - gammaln(pu) + pu * data.log_ux)
        - wsum * gammaln(q)
        + wsum * q * math.log(v)
        + p * data.sum_wx_log_m
        - data.sum_w_log_m
        - (p * sum_wx_L + q * sum_w_L)
    )
    dig = digamma(pu + q)
    d_p = (W * ux) @ (dig - digamma(pu) + data.log_ux) + data.sum_wx_log_m - sum_wx_L
    d_q = W @ dig - wsum * digamma(q) + wsum * math.log(v) - sum_w_L
    d_v = wsum * q / v - (p * float(data.wx @ inv_xmv) + q * float(data.w @ inv_xmv))
    params = np.array([p, q, v])
    grad_params = np.array([d_p, d_q, d_v])
    value = -ll / wsum + penalizer * np.sum(params**2)
    grad = -(grad_params * params) / wsum + 2.0 * penalizer * params**2
    if not (np.isfinite(value) and np.all(np.isfinite(grad))):
        return np.inf, np.zeros(3)
    return float(value), grad


@dataclass(frozen=True)
class GammaGammaParams:
    """Fitted Gamma-Gamma spend parameters and fit diagnostics."""

    p: float
    q: float
    v: float
    log_likelihood: float = float("nan")
    n_customers: float = 0
    penalizer: float = 0.0
    converged: bool = True
    iterations: int = 0

    def as_dict(self) -> dict:
        return asdict(self)

    @property
    def population_mean(self) -> float:
        """Mean spend per transaction of a customer with no repeat history (NaN if q <= 1)."""
        return self.p * self.v / (self.q - 1.0) if self.q > 1.0 else float("nan")

    def expected_aov(self, x, m) -> np.ndarray:
        """E[M | x, m]: the conditional expected average order value (x repeat purchases, mean m)."""
        x = np.asarray(x, dtype=float)
        m = np.where(x > 0, np.asarray(m, dtype=float), 0.0)
        den = self.p * x + self.q - 1.0
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(den > 0, self.p * (self.v + x * m) / den, np.nan)


def fit_gamma_gamma(x, m, weights=None, *, penalizer: float = 0.0, initial=None) -> GammaGammaParams:
    """Maximum-likelihood Gamma-Gamma on repeat customers: rows with ``x <= 0`` or ``m <= 0`` are
    dropped (the model is for repeat spend, and ``lifetimes`` refuses them)."""
    (x, m), w = _as_arrays(x, m, weights=weights)
    keep = (x > 0) & (m > 0) & (w > 0) & np.isfinite(m)
    x, m, w = x[keep], m[keep], w[keep]
    if x.size == 0:
        raise LtvFitError("Gamma-Gamma: no repeat customer with a positive mean spend")
    wsum = float(w.sum())
    data = _GammaGammaData(x, m, w)
    if initial is None:
        # method-of-moments-ish start: spend ~ Gamma(p, nu), nu ~ Gamma(q, v)
        mean_m = float((w @ m) / wsum)
        starts = [np.log([1.0, 2.0, max(mean_m, 1e-6)]), np.zeros(3)]
    else:
        starts = [np.log(np.asarray(initial, dtype=float))]
    best = None
    for x0 in starts:
        res, fun, converged = _minimize(
            lambda lp: _gg_objective(lp, data, penalizer), x0
        )
        if best is None or (converged, -fun) > (best[2], -best[1]):
            best = (res, fun, converged)
        if converged:
            break
    res, fun, converged = best
    p, q, v = (float(val) for val in np.exp(res.x))
    ll = float(-(fun - penalizer * (p * p + q * q + v * v)) * wsum)
    if not all(np.isfinite([p, q, v])):
        raise LtvFitError("Gamma-Gamma: the fit diverged; try a small penalizer (e.g. 0.001)")
    return GammaGammaParams(p, q, v, ll, wsum, penalizer, converged, int(res.nit))


# ----------------------------------------------------------------------------------------- CLV
def discounted_purchases(
    bgnbd: BgNbdParams,
    x,
    t_x,
    T,
    *,
    horizon: float,
    discount_rate: float = 0.0,
    period: float | None = None,
) -> np.ndarray:
    """Expected purchases over ``(T, T + horizon]``, each discount period's share divided by
    ``(1 + discount_rate) ** k`` (k = 1, 2, ...; the last period may be partial and is discounted
    at its end). ``horizon`` and ``period`` are in the model's time unit. Rate 0: E[Y(horizon)]."""
    if horizon <= 0:
        return np.zeros(np.broadcast(np.asarray(x), np.asarray(t_x), np.asarray(T)).shape)
    if not discount_rate or period is None or period <= 0:
        return bgnbd.expected_purchases(horizon, x, t_x, T)
    n_periods = math.ceil(horizon / period - 1e-12)
    total = 0.0
    previous = 0.0
    for k in range(1, n_periods + 1):
        cumulative = bgnbd.expected_purchases(min(k * period, horizon), x, t_x, T)
        total = total + (cumulative - previous) / (1.0 + discount_rate) ** k
        previous = cumulative
    return np.asarray(total)


def clv(
    bgnbd: BgNbdParams,
    gamma_gamma: GammaGammaParams,
    x,
    t_x,
    T,
    m,
    *,
    horizon: float,
    discount_rate: float = 0.0,
    period: float | None = None,
) -> np.ndarray:
    """Predicted customer lifetime value over ``horizon`` (model time unit): expected AOV times
    the (optionally discounted) expected number of purchases."""
    return gamma_gamma.expected_aov(x, m) * discounted_purchases(
        bgnbd, x, t_x, T, horizon=horizon, discount_rate=discount_rate, period=period
    )

