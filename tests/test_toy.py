"""Section 3.2's claim at small scale: FA inverts sin(3 pi x) where plain training does not
(the code of notebook 01, executed here)."""
from fa_utils import config
from notebook_code import toy


def test_fa_inverts_the_toy_function_where_plain_training_does_not():
    t = toy()
    cfg = config.make_config("toy", "smoke", hidden=128, steps=400, grid=201)
    plain, _ = t.train_toy(cfg, with_fa=False, progress=False)
    fa_net, _ = t.train_toy(cfg, progress=False)
    s = t.summarise(t.evaluate(plain, fa_net, cfg), cfg.tolerance)
    assert s["fa_recovered_fraction"] > 0.85, s
    assert s["plain_recovered_fraction"] < 0.4, s  # about one branch of six
    assert s["fa_mean_error"] < 0.2 * s["plain_mean_error"], s
    # both networks fit the function itself
    assert s["plain_fit_mse"] < 0.05 and s["fa_fit_mse"] < 0.05, s
