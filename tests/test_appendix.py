"""Appendix A (Sections 7.1-7.2) and the sqrt(2) clamp of Eq. 9, checked numerically (the
code lives in notebook 06)."""
import math

import pytest
import torch

from fa_utils import config
from fa_utils.config import ConfigError
from notebook_code import appendix as appendix_code

appendix = appendix_code()  # notebook 06's Appendix A code

WS = (0.2, 0.9, 1.0, 1.3, 1.41, 1.42, 1.7, -1.2)


def test_closed_form_matches_the_iteration():
    it = appendix.one_weight_iteration(WS, x=0.7, r0=-0.3, steps=30)
    cf = appendix.one_weight_closed_form(WS, x=0.7, r0=-0.3, steps=30)
    assert it.shape == cf.shape == (len(WS), 31)
    assert it.abs().max() > 1e5  # the diverging weights are in the comparison
    torch.testing.assert_close(it, cf, rtol=1e-10, atol=1e-12)


def test_iteration_is_eq13_step_by_step():
    # r_{p+1} = r_p + w (a - w r_p) with a = w x, written out by hand
    w, x, r = 1.3, 0.7, -0.3
    expected = [r]
    for _ in range(5):
        r = r + w * (w * x - w * r)
        expected.append(r)
    got = appendix.one_weight_iteration([w], x=x, r0=-0.3, steps=5)[0]
    torch.testing.assert_close(got, torch.tensor(expected, dtype=torch.float64), rtol=1e-12, atol=1e-12)


def test_convergence_exactly_when_w_squared_is_below_two():
    P = 60
    err = (appendix.one_weight_iteration(WS, x=1.0, r0=0.0, steps=P) - 1.0).abs()
    w = torch.tensor(WS, dtype=torch.float64)
    converges = (w ** 2 > 0) & (w ** 2 < 2)
    assert torch.equal(err[:, -1] < err[:, 0], converges)
    torch.testing.assert_close(err[:, -1], err[:, 0] * appendix.contraction(WS) ** P,
                               rtol=1e-8, atol=1e-12)
    lim = appendix.one_weight_limit(WS, x=1.0)
    assert torch.isnan(lim[~converges]).all() and torch.allclose(lim[converges], torch.ones(1, dtype=lim.dtype))


def test_gram_distances_of_known_matrices():
    q, _ = torch.linalg.qr(torch.randn(6, 6, dtype=torch.float64))
    assert all(v < 1e-12 for v in appendix.gram_distances(q).values())
    d = appendix.gram_distances(2 * q)
    assert d["WtW-I"] == pytest.approx(3.0)  # 4I - I
    assert d["Wt-pinv"] == pytest.approx(3.0)  # (2 - 1/2) Q^T against Q^T / 2
    rows = q[:2]  # orthonormal rows, fewer outputs
    d = appendix.gram_distances(rows)
    assert d["WWt-I"] < 1e-12 and d["WtW-P"] < 1e-12 and d["Wt-pinv"] < 1e-12
    assert d["WtW-I"] == pytest.approx(math.sqrt(1 - 2 / 6))


def test_fa_drives_a_square_layer_to_an_orthogonal_one():
    tol = 1e-3  # relative Frobenius ||W^T W - I|| / sqrt(n) after 300 steps
    res = appendix.train_linear_fa(16, 16, steps=300, lr=1e-2, batch=128, seed=0)
    assert res.distances["WtW-I"][0] > 0.5  # started far from orthogonal
    final = res.final()
    assert final["WtW-I"] < tol, final
    torch.testing.assert_close(res.W.T, torch.linalg.pinv(res.W), rtol=0, atol=10 * tol)
    assert res.loss[-1] < 1e-3 * res.loss[0]


def test_fa_with_fewer_outputs_reaches_the_pseudo_inverse_not_the_identity():
    tol = 0.01
    res = appendix.train_linear_fa(16, 6, steps=400, lr=1e-2, batch=128, seed=1)
    final = res.final()
    assert final["WWt-I"] < tol and final["WtW-P"] < tol and final["Wt-pinv"] < tol, final
    assert final["WtW-I"] == pytest.approx(math.sqrt(1 - 6 / 16), abs=tol)


def test_the_clamp_turns_a_diverging_run_into_a_converging_one():
    w0 = [1.6, 1.0, 0.5]
    free = appendix.train_diagonal_fa(w0, T=4, lr=0.01, steps=100, clamp=None)
    clamped = appendix.train_diagonal_fa(w0, T=4, lr=0.01, steps=100, clamp=appendix.SQRT2)
    assert free.diverged_at is not None
    assert clamped.diverged_at is None and clamped.weights.abs().max() <= appendix.SQRT2
    final = clamped.weights[-1]
    assert (final ** 2).max() < 2
    assert appendix.inner_errors(final, steps=20)[:, -1].max() < 1e-3
    # while the unclamped initial weight makes the inference-time iteration blow up
    e = appendix.inner_errors([1.6], steps=20)[0]
    assert e[-1] > 100 * e[0]


@pytest.mark.parametrize("profile", config.PROFILES)
def test_appendix_config_profiles_build_and_round_trip(profile):
    cfg = config.make_config("appendix", profile)
    assert config.SECTIONS["appendix"](**config.to_dict(cfg)) == cfg
    assert cfg.clamp_w0 ** 2 > 2  # the demonstration starts outside the bound


def test_appendix_config_refuses_a_layer_that_is_not_narrower():
    with pytest.raises(ConfigError, match="linear_out"):
        config.make_config("appendix", "smoke", linear_out=40)
