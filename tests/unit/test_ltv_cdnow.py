"""BG/NBD and Gamma-Gamma on the CDNOW summary: the published parameters, and lifetimes as oracle."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from storesync.ltv import clv, discounted_purchases, fit_bgnbd, fit_gamma_gamma
from storesync.ltv.models import BgNbdParams, GammaGammaParams, bgnbd_log_likelihood

CDNOW = Path(__file__).resolve().parents[1] / "fixtures" / "cdnow" / "cdnow_summary.csv"

# Maximum likelihood on this file (fixtures/cdnow/README.md); FHL (2005) publish
# r = 0.243, alpha = 4.414, a = 0.793, b = 2.426 and p = 6.25, q = 3.74, v = 15.44.
BGNBD = {"r": 0.2426, "alpha": 4.4135, "a": 0.7929, "b": 2.4258}
GAMMA_GAMMA = {"p": 6.2488, "q": 3.7446, "v": 15.4477}


@pytest.fixture(scope="module")
def cdnow():
    data = np.genfromtxt(CDNOW, delimiter=",", names=True)
    assert data.size == 2357
    return data


@pytest.fixture(scope="module")
def bgnbd(cdnow) -> BgNbdParams:
    return fit_bgnbd(cdnow["x"], cdnow["t_x"], cdnow["T"])


@pytest.fixture(scope="module")
def gamma_gamma(cdnow) -> GammaGammaParams:
    repeat = cdnow[cdnow["x"] > 0]
    assert repeat.size == 946
    return fit_gamma_gamma(repeat["x"], repeat["zbar"])


def test_bgnbd_reproduces_the_published_fit(bgnbd):
    assert bgnbd.converged
    for name, expected in BGNBD.items():
        assert getattr(bgnbd, name) == pytest.approx(expected, rel=0.01), name
    # FHL (2005) report LL = -9582.4 at the optimum
    assert bgnbd.log_likelihood == pytest.approx(-9582.4, abs=0.1)
    assert bgnbd.n_customers == 2357


def test_gamma_gamma_reproduces_the_published_fit(gamma_gamma):
    assert gamma_gamma.converged
    for name, expected in GAMMA_GAMMA.items():
        assert getattr(gamma_gamma, name) == pytest.approx(expected, rel=0.01), name
    assert gamma_gamma.n_customers == 946


def test_fitting_is_fast_and_weights_are_a_histogram(cdnow):
    started = time.perf_counter()
    fit_bgnbd(cdnow["x"], cdnow["t_x"], cdnow["T"])
    assert time.perf_counter() - started < 2.0
    # the same data as distinct rows with counts gives the same fit
    stacked = np.column_stack([cdnow["x"], cdnow["t_x"], cdnow["T"]])
    rows, counts = np.unique(stacked, axis=0, return_counts=True)
    assert rows.shape[0] < cdnow.size
    weighted = fit_bgnbd(rows[:, 0], rows[:, 1], rows[:, 2], counts)
    for name, expected in BGNBD.items():
        assert getattr(weighted, name) == pytest.approx(expected, rel=0.01), name


def test_penalizer_shrinks_parameters(cdnow, bgnbd):
    penalized = fit_bgnbd(cdnow["x"], cdnow["t_x"], cdnow["T"], penalizer=0.01)
    assert penalized.converged
    assert penalized.alpha < bgnbd.alpha
    assert penalized.log_likelihood < bgnbd.log_likelihood


def _lifetimes_bgnbd(params: BgNbdParams):
    from lifetimes import BetaGeoFitter

    model = BetaGeoFitter()
    model.params_ = pd.Series({"r": params.r, "alpha": params.alpha, "a": params.a, "b": params.b})
    model.predict = model.conditional_expected_number_of_purchases_up_to_time  # set by .fit() otherwise
    return model


def test_conditional_expectations_match_lifetimes(cdnow, bgnbd):
    model = _lifetimes_bgnbd(bgnbd)
    x, t_x, T = cdnow["x"], cdnow["t_x"], cdnow["T"]
    for t in (1.0, 10.0, 39.0, 52.0):
        ours = bgnbd.expected_purchases(t, x, t_x, T)
        oracle = model.conditional_expected_number_of_purchases_up_to_time(t, x, t_x, T)
        np.testing.assert_allclose(ours, oracle, rtol=1e-8)
    np.testing.assert_allclose(
        bgnbd.p_alive(x, t_x, T), model.conditional_probability_alive(x, t_x, T), rtol=1e-10
    )
    # FHL (2005): a customer with x=2, t_x=30.43, T=38.86 is expected to make 1.226 purchases in
    # the next 39 weeks (Hardie's note 004 worked example, with the rounded published params).
    published = BgNbdParams(0.243, 4.414, 0.793, 2.426)
    assert float(published.expected_purchases(39.0, 2, 30.43, 38.86)) == pytest.approx(1.226, abs=0.001)
    # the log-likelihood matches lifetimes' objective
    ll = bgnbd_log_likelihood((bgnbd.r, bgnbd.alpha, bgnbd.a, bgnbd.b), x, t_x, T)
    lifetimes_nll = model._negative_log_likelihood(
        np.log([bgnbd.r, bgnbd.alpha, bgnbd.a, bgnbd.b]), x, t_x, T, np.ones_like(x), 0.0
    )
    assert -ll.mean() == pytest.approx(lifetimes_nll, rel=1e-12)


def test_heavy_buyers_do_not_overflow(bgnbd):
    x = np.array([0, 50, 200, 1000])
    t_x = np.array([0.0, 38.0, 38.5, 38.8])
    T = np.full(4, 38.86)
    expected = bgnbd.expected_purchases(52.0, x, t_x, T)
    assert np.all(np.isfinite(expected)) and np.all(np.diff(expected) > 0)
    assert np.all((bgnbd.p_alive(x, t_x, T) > 0) & (bgnbd.p_alive(x, t_x, T) <= 1))


def test_aov_and_clv_match_lifetimes(cdnow, bgnbd, gamma_gamma):
    from lifetimes import GammaGammaFitter

    gg = GammaGammaFitter()
    gg.params_ = pd.Series({"p": gamma_gamma.p, "q": gamma_gamma.q, "v": gamma_gamma.v})
    x = pd.Series(cdnow["x"])
    m = pd.Series(cdnow["zbar"])
    oracle_aov = gg.conditional_expected_average_profit(x, m).to_numpy()
    np.testing.assert_allclose(gamma_gamma.expected_aov(cdnow["x"], cdnow["zbar"]), oracle_aov, rtol=1e-12)
    assert gamma_gamma.population_mean == pytest.approx(gamma_gamma.p * gamma_gamma.v / (gamma_gamma.q - 1))

    # lifetimes' CLV: 12 monthly steps of 4.345 weeks, 1% a month
    oracle_clv = gg.customer_lifetime_value(
        _lifetimes_bgnbd(bgnbd), x, pd.Series(cdnow["t_x"]), pd.Series(cdnow["T"]), m,
        time=12, discount_rate=0.01, freq="W",
    ).to_numpy()
    ours = clv(
        bgnbd, gamma_gamma, cdnow["x"], cdnow["t_x"], cdnow["T"], cdnow["zbar"],
        horizon=12 * 4.345, discount_rate=0.01, period=4.345,
    )
    np.testing.assert_allclose(ours, oracle_clv, rtol=1e-8)
    # undiscounted: AOV times expected purchases over the horizon
    flat = discounted_purchases(bgnbd, cdnow["x"], cdnow["t_x"], cdnow["T"], horizon=52.0)
    np.testing.assert_allclose(flat, bgnbd.expected_purchases(52.0, cdnow["x"], cdnow["t_x"], cdnow["T"]))


def test_expected_purchases_when_dropout_is_homogeneous():
    """A fit can run to a, b -> infinity (every customer has the same drop-out probability
    p = a / (a + b)), where 2F1 overflows: the quadrature takes over, continuously, and tends to
    the fixed-p formula E = (1 - ((alpha+T) / (alpha+T+p t))^(r+x)) / p * P(alive)."""
    r, alpha, t = 0.3, 5.3, 52.0
    x = np.array([0.0, 3.0, 10.0])
    t_x = np.array([0.0, 20.0, 35.0])
    T = np.array([40.0, 40.0, 40.0])
    below = BgNbdParams(r, alpha, 0.4 * 999, 0.6 * 999)  # a + b just under the switch: closed form
    above = BgNbdParams(r, alpha, 0.4 * 1001, 0.6 * 1001)  # just over: quadrature
    np.testing.assert_allclose(
        below.expected_purchases(t, x, t_x, T), above.expected_purchases(t, x, t_x, T), rtol=1e-4
    )
    # where both work, they agree closely
    mid = BgNbdParams(r, alpha, 40.0, 60.0)
    quad = mid._expected_purchases_quadrature(np.full(3, t), x, T) * mid.p_alive(x, t_x, T)
    np.testing.assert_allclose(quad, mid.expected_purchases(t, x, t_x, T), rtol=1e-10)
    # the limit
    huge = BgNbdParams(r, alpha, 4e9, 6e9)
    p = 0.4
    limit = (1 - ((alpha + T) / (alpha + T + p * t)) ** (r + x)) / p * huge.p_alive(x, t_x, T)
    np.testing.assert_allclose(huge.expected_purchases(t, x, t_x, T), limit, rtol=1e-6)
