"""Tests of fa_utils.fid: Frechet distance (Eq. 10), input conversion, the N < D policy,
offline behaviour (no network is ever touched: sockets are blocked and pytorch-fid's
download is replaced by an "offline" error), the classifier fallback, and the cache of
real statistics.

The real pytorch-fid weights are not available here; the local-file path is exercised with
a randomly initialised Inception of the same structure saved to a file, and one test with
the real weights runs only where the file exists locally.
"""
from __future__ import annotations

import socket
import urllib.error

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fa_utils import fid, metrics
from fa_utils.data import mnist_sample


# --------------------------------------------------------------------------------------
# fixtures
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Small models and matrices on a shared 2-core machine: one torch / BLAS thread, far
    faster than two when the cores are busy (threads wait on each other; docs/choices.md
    section 1)."""
    try:
        from threadpoolctl import threadpool_limits
        blas = threadpool_limits(limits=1)
    except ImportError:  # threadpoolctl comes with scikit-learn (mlxtend); optional here
        blas = None
    with metrics.one_thread():
        yield
    if blas is not None:
        blas.restore_original_limits()


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No weights anywhere, an empty torch hub cache, pytorch-fid's download raising as
    offline, and every socket call recorded and refused."""
    import pytorch_fid.inception as pfi

    attempts = {"download": 0, "socket": 0}

    def download(url, *args, **kwargs):
        attempts["download"] += 1
        raise urllib.error.URLError("[Errno -2] Name or service not known (test: offline)")

    def no_socket(*args, **kwargs):
        attempts["socket"] += 1
        raise OSError("network disabled in tests")

    monkeypatch.delenv(fid.WEIGHTS_ENV, raising=False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setattr(pfi, "load_state_dict_from_url", download)
    monkeypatch.setattr(socket.socket, "connect", no_socket)
    monkeypatch.setattr(socket, "create_connection", no_socket)
    monkeypatch.setattr(socket, "getaddrinfo", no_socket)
    monkeypatch.setattr(fid, "_MODELS", {})
    return attempts


@pytest.fixture(scope="module")
def mnist():
    x, y = mnist_sample(0)
    return x, y


@pytest.fixture(scope="module")
def classifier(mnist):
    """Trained on the first 2,000 digits; the rest (3,000) are held out for the FIDs."""
    x, y = mnist
    return fid.train_feature_classifier(x[:2000], y[:2000], epochs=4, batch_size=64, seed=0)


def _gauss(n, d, seed, shift=0.0):
    return np.random.default_rng(seed).normal(size=(n, d)) + shift


# --------------------------------------------------------------------------------------
# Frechet distance and statistics
# --------------------------------------------------------------------------------------


def test_statistics_are_mean_and_unbiased_covariance_in_float64():
    f = _gauss(50, 4, 0).astype(np.float32)
    mu, sigma = fid.statistics(torch.from_numpy(f))
    assert mu.dtype == sigma.dtype == np.float64 and mu.shape == (4,) and sigma.shape == (4, 4)
    np.testing.assert_allclose(mu, f.astype(np.float64).mean(0))
    np.testing.assert_allclose(sigma, np.cov(f.astype(np.float64), rowvar=False))
    with pytest.raises(ValueError, match="at least 2"):
        fid.statistics(f[:1])
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        fid.statistics(f[0])


def test_distance_of_a_set_with_itself_is_zero_and_distance_is_symmetric():
    s1 = fid.statistics(_gauss(400, 8, 1))
    s2 = fid.statistics(_gauss(400, 8, 2, shift=0.5) * 2.0)
    assert abs(fid.frechet_distance(*s1, *s1)) < 1e-8
    d12, d21 = fid.frechet_distance(*s1, *s2), fid.frechet_distance(*s2, *s1)
    assert d12 > 1.0
    assert d12 == pytest.approx(d21, rel=1e-9)


def test_distance_matches_the_closed_form_for_diagonal_gaussians():
    rng = np.random.default_rng(3)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    s1, s2 = rng.uniform(0.1, 3.0, 6), rng.uniform(0.1, 3.0, 6)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(s1 + s2 - 2 * np.sqrt(s1 * s2))
    got = fid.frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2))
    assert got == pytest.approx(expected, rel=1e-9)


def test_pure_mean_shift_gives_the_squared_mean_difference():
    a = np.random.default_rng(4).normal(size=(5, 5))
    sigma = a @ a.T + np.eye(5)  # a full (non-diagonal) SPD covariance
    mu1, mu2 = np.zeros(5), np.arange(5.0)
    assert fid.frechet_distance(mu1, sigma, mu2, sigma) == pytest.approx(30.0, rel=1e-8)


def test_frechet_distance_refuses_mismatched_shapes():
    with pytest.raises(ValueError, match="covariances"):
        fid.frechet_distance(np.zeros(3), np.eye(3), np.zeros(3), np.eye(4))
    with pytest.raises(ValueError, match="means"):
        fid.frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(3))


# --------------------------------------------------------------------------------------
# Inception input and features (without the real weights)
# --------------------------------------------------------------------------------------


def test_grayscale_is_repeated_to_three_equal_channels():
    x = torch.rand(2, 1, 5, 5)
    y = fid.to_inception_input(x)
    assert y.shape == (2, 3, 5, 5)
    assert torch.equal(y[:, 0], x[:, 0]) and torch.equal(y[:, 1], x[:, 0]) and torch.equal(y[:, 2], x[:, 0])
    rgb = torch.rand(2, 3, 5, 5)
    assert torch.equal(fid.to_inception_input(rgb), rgb)


@pytest.mark.parametrize("bad, match", [
    (torch.full((1, 1, 4, 4), 1.5), r"\[0, 1\]"),
    (torch.full((1, 3, 4, 4), -0.1), r"\[0, 1\]"),
    (torch.full((1, 1, 4, 4), float("nan")), r"\[0, 1\]"),
    (torch.rand(1, 2, 4, 4), "1 \\(grayscale\\) or 3"),
    (torch.rand(1, 4, 4, 4), "1 \\(grayscale\\) or 3"),
    (torch.rand(1, 4, 4), "4 dims"),
])
def test_inception_input_refuses_bad_range_and_channel_counts(bad, match):
    with pytest.raises(ValueError, match=match):
        fid.to_inception_input(bad)


def test_inception_features_batches_and_feeds_three_channels(monkeypatch):
    """pytorch-fid's model replaced by a recorder: (B, 2048, 1, 1) like block 3's output."""
    seen = []

    def fake_model(x):
        seen.append(tuple(x.shape))
        return [x.mean(dim=(1, 2, 3)).reshape(-1, 1, 1, 1).expand(-1, fid.INCEPTION_DIM, 1, 1)]

    monkeypatch.setattr(fid, "_load_inception", lambda weights_path, device: fake_model)
    x = torch.rand(7, 1, 6, 6)
    f = fid.inception_features(x, batch_size=3)
    assert seen == [(3, 3, 6, 6), (3, 3, 6, 6), (1, 3, 6, 6)]
    assert f.shape == (7, 2048) and f.dtype == np.float64
    np.testing.assert_allclose(f[:, 0], x.mean(dim=(1, 2, 3)).double().numpy(), rtol=1e-6)


def test_local_weights_file_is_loaded_without_network(offline, tmp_path, monkeypatch):
    """A file with the FID Inception's keys and shapes (torchvision's Inception-v3 with 1008
    classes and no aux head has the same state-dict layout; random weights) given as
    FA_INCEPTION_WEIGHTS is loaded by pytorch-fid's own InceptionV3, offline."""
    import torchvision

    net = torchvision.models.inception_v3(weights=None, aux_logits=False, num_classes=1008,
                                          init_weights=False)
    sd = net.state_dict()
    sd["Conv2d_1a_3x3.conv.weight"].fill_(0.0123)  # a marker to find in the loaded model
    path = tmp_path / "local_inception.pth"
    torch.save(sd, path)
    monkeypatch.setenv(fid.WEIGHTS_ENV, str(path))
    f = fid.inception_features(torch.rand(2, 1, 28, 28))
    assert f.shape == (2, 2048) and np.isfinite(f).all() and (f >= 0).all()
    (model,) = fid._MODELS.values()
    assert not model.training
    assert torch.all(model.blocks[0][0].conv.weight == 0.0123)
    assert offline == {"download": 0, "socket": 0}


def test_missing_weights_raise_inception_unavailable_offline_without_network(offline):
    with pytest.raises(fid.InceptionUnavailable) as info:
        fid.inception_features(torch.rand(2, 1, 28, 28))
    msg = str(info.value)
    assert "\n" not in msg
    for part in (fid.INCEPTION_WEIGHTS_FILE, fid.INCEPTION_WEIGHTS_URL, fid.WEIGHTS_ENV,
                 "weights_path", "offline"):
        assert part in msg
    assert offline == {"download": 1, "socket": 0}


def test_given_weights_path_that_does_not_exist_is_named(offline, tmp_path):
    missing = tmp_path / "nope.pth"
    with pytest.raises(fid.InceptionUnavailable, match="nope.pth"):
        fid.inception_features(torch.rand(2, 1, 8, 8), weights_path=missing)
    assert offline == {"download": 0, "socket": 0}


def test_corrupt_weights_file_raises_inception_unavailable(offline, tmp_path):
    bad = tmp_path / fid.INCEPTION_WEIGHTS_FILE
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(fid.InceptionUnavailable, match="could not be loaded"):
        fid.inception_features(torch.rand(2, 1, 8, 8), weights_path=bad)


def _real_weights():
    try:
        return fid.inception_weights_path()
    except fid.InceptionUnavailable:
        return None


@pytest.mark.skipif(_real_weights() is None,
                    reason=f"{fid.INCEPTION_WEIGHTS_FILE} not found locally (no network here): "
                           f"set {fid.WEIGHTS_ENV} or put it in torch hub's checkpoints/")
def test_real_inception_weights_give_2048_nonnegative_features(mnist):
    f = fid.inception_features(mnist[0][:4])
    assert f.shape == (4, 2048) and np.isfinite(f).all() and (f >= 0).all() and f.std() > 0


# --------------------------------------------------------------------------------------
# Number of images, keys, comparability
# --------------------------------------------------------------------------------------


def test_too_few_images_refused_below_two_and_not_comparable_below_d():
    clf = fid.FeatureClassifier(1, 10, feature_dim=16)
    x = torch.rand(40, 1, 12, 12, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match=r"n_real=40, n_fake=1"):
        fid.compute_fid(x, x[:1], feature="classifier", classifier=clf)
    r = fid.compute_fid(x[:20], x[20:30], feature="classifier", classifier=clf)
    assert not r.comparable and "N < D (10 < 16)" in r.note and np.isfinite(r.value)
    with pytest.raises(ValueError, match=r"at least 16 images.*n_fake=10"):
        fid.compute_fid(x[:20], x[20:30], feature="classifier", classifier=clf,
                        min_images="features")
    r = fid.compute_fid(x[:20], x[20:], feature="classifier", classifier=clf)
    assert "N < D" not in r.note and not r.comparable  # enough images, but not Inception


def test_only_inception_with_at_least_2048_images_is_comparable():
    assert fid._comparability(fid.PAPER_FEATURE, 10000, 10000, 2048) == (True, "")
    ok, note = fid._comparability(fid.PAPER_FEATURE, 2048, 5000, 2048)
    assert ok and "10000" in note
    ok, note = fid._comparability(fid.PAPER_FEATURE, 2047, 10000, 2048)
    assert not ok and "N < D (2047 < 2048)" in note
    ok, note = fid._comparability("classifier-128", 10000, 10000, 128)
    assert not ok and "never comparable" in note


def test_real_stats_key_names_dataset_split_count_resolution_feature():
    assert (fid.real_stats_key("mnist", "test", 10000, 28, fid.PAPER_FEATURE)
            == "mnist-test-10000-28px-inception-v3-pool3-2048")
    assert fid.real_stats_key("CIFAR10", "train", 500, 32, "inception") == \
        "cifar10-train-500-32px-inception-v3-pool3-2048"
    with pytest.raises(ValueError, match="count"):
        fid.real_stats_key("mnist", "test", 0, 28, "inception")
    with pytest.raises(ValueError, match="dataset"):
        fid.real_stats_key("a/b", "test", 10, 28, "inception")


# --------------------------------------------------------------------------------------
# Classifier fallback
# --------------------------------------------------------------------------------------


def test_feature_classifier_refuses_unlabeled_data():
    x = torch.rand(8, 3, 16, 16)
    with pytest.raises(ValueError, match="needs class labels"):
        fid.train_feature_classifier(x, torch.full((8,), -1))
    with pytest.raises(ValueError, match="shape"):
        fid.train_feature_classifier(x, torch.zeros(7, dtype=torch.long))


def _real_blurred_noise(x, **feature):
    """Fallback Frechet distances from held-out digits 2000-3499 to: other held-out digits
    (3500-4999), the same blurred (5x5 box), uniform noise; D = 128, 1,500 images each."""
    a, b = x[2000:3500], x[3500:5000]
    blurred = F.avg_pool2d(b, 5, stride=1, padding=2, count_include_pad=False)
    noise = torch.rand(b.shape, generator=torch.Generator().manual_seed(1))
    values = []
    for other in (b, blurred, noise):
        r = fid.compute_fid(a, other, **feature)
        assert r.feature == f"{feature['feature']}-128" and not r.comparable
        values.append(r.value)
    print(f"{feature['feature']}-feature FID: real {values[0]:.3g}, blurred {values[1]:.3g}, "
          f"noise {values[2]:.3g}")
    return values


def test_classifier_fallback_ranks_real_above_blurred_and_noise(mnist, classifier):
    x, y = mnist
    with torch.no_grad():
        held_out_accuracy = (classifier(x[2000:]).argmax(1) == y[2000:]).float().mean()
    assert held_out_accuracy > 0.8  # the features mean something
    real, blur, rand = _real_blurred_noise(x, feature="classifier", classifier=classifier)
    assert real < blur < rand, (real, blur, rand)
    assert real < 0.2 * blur


def test_fid_or_fallback_prints_one_line_and_returns_a_non_comparable_result(
        offline, mnist, classifier, capsys):
    x = mnist[0]
    built = []

    def factory():
        built.append(1)
        return classifier

    r = fid.fid_or_fallback(x[2000:2300], x[2300:2600], classifier_factory=factory)
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    assert fid.INCEPTION_WEIGHTS_FILE in out and "NOT comparable" in out
    assert built == [1]
    assert r.feature == "classifier-128" and r.comparable is False
    assert "Inception weights unavailable" in r.note and np.isfinite(r.value)
    assert (r.n_real, r.n_fake) == (300, 300)
    assert offline["socket"] == 0
    with pytest.raises(fid.InceptionUnavailable):
        fid.fid_or_fallback(x[:10], x[10:20])  # no factory: nothing to fall back on


@pytest.fixture(scope="module")
def autoencoder(mnist):
    """The label-free fallback, trained on 2,000 training digits; labels never seen."""
    return fid.train_feature_autoencoder(mnist[0][:2000], seed=0)


def test_autoencoder_fallback_ranks_real_above_blurred_and_noise(mnist, autoencoder):
    x = mnist[0]
    assert autoencoder.train_mse < 0.05  # it reconstructs: the features describe the image
    real, blur, rand = _real_blurred_noise(x, feature="autoencoder", autoencoder=autoencoder)
    assert real < blur < rand, (real, blur, rand)
    assert real < 0.5 * blur


def test_feature_autoencoder_on_colour_64_is_seeded_and_leaves_the_global_rng():
    x = torch.rand(12, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    state = torch.get_rng_state()
    a = fid.train_feature_autoencoder(x, epochs=1, min_steps=4, batch_size=4, seed=3)
    assert torch.equal(torch.get_rng_state(), state)
    b = fid.train_feature_autoencoder(x, epochs=1, min_steps=4, batch_size=4, seed=3)
    fa_, fb = fid.classifier_features(a, x), fid.classifier_features(b, x)
    assert fa_.shape == (12, 128) and np.array_equal(fa_, fb)
    assert a(x[:2]).shape == (2, 3, 64, 64)
    with pytest.raises(ValueError, match="square"):
        fid.train_feature_autoencoder(torch.rand(4, 3, 32, 16))
    with pytest.raises(ValueError, match="autoencoder="):
        fid.compute_fid(x, x, feature="autoencoder")


def test_fid_or_fallback_without_labels_uses_the_autoencoder(offline, mnist, autoencoder, capsys):
    x = mnist[0]
    r = fid.fid_or_fallback(x[2000:2300], x[2300:2600], autoencoder_factory=lambda: autoencoder)
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "autoencoder (label-free)" in out and "NOT comparable" in out
    assert r.feature == "autoencoder-128" and r.comparable is False
    assert "Inception weights unavailable" in r.note and np.isfinite(r.value)
    assert offline["socket"] == 0


# --------------------------------------------------------------------------------------
# Cache of real statistics
# --------------------------------------------------------------------------------------


def _count_calls(monkeypatch, name):
    calls = []
    original = getattr(fid, name)

    def wrapper(model_or_images, *args, **kwargs):
        calls.append(len(args[0]) if args else len(model_or_images))
        return original(model_or_images, *args, **kwargs)

    monkeypatch.setattr(fid, name, wrapper)
    return calls


def test_cached_real_statistics_are_not_recomputed(monkeypatch, mnist, classifier):
    x = mnist[0]
    real, fake = x[2000:2600], x[2600:2800]
    calls = _count_calls(monkeypatch, "classifier_features")
    key = fid.real_stats_key("mnist-sample", "heldout", 600, 28, "clf-test")
    r1 = fid.compute_fid(real, fake, real_cache_key=key, feature="classifier",
                         classifier=classifier)
    assert calls == [600, 200]
    r2 = fid.compute_fid(real, fake, real_cache_key=key, feature="classifier",
                         classifier=classifier)
    assert calls == [600, 200, 200]  # real features not extracted again
    assert r2.value == pytest.approx(r1.value, rel=1e-12)
    r3 = fid.compute_fid(None, fake, real_cache_key=key, feature="classifier",
                         classifier=classifier)
    assert r3.n_real == 600 and r3.value == pytest.approx(r1.value, rel=1e-12)
    files = list((fid.outputs.runs_dir() / "fid_stats").glob(key + "--1x28x28--classifier-128-*.npz"))
    assert len(files) == 1
    with pytest.raises(ValueError, match="600 images but real has 599"):
        fid.compute_fid(real[:599], fake, real_cache_key=key, feature="classifier",
                        classifier=classifier)


def test_inception_cache_path_uses_the_key_as_file_name(monkeypatch):
    """Inception path with pytorch-fid's network replaced by a cheap 8-d stand-in."""
    calls = []

    def fake_features(images, **kwargs):
        calls.append(images.shape[0])
        return images.flatten(1)[:, :8].double().numpy()

    monkeypatch.setattr(fid, "inception_features", fake_features)
    g = torch.Generator().manual_seed(5)
    real, fake = torch.rand(30, 1, 4, 4, generator=g), torch.rand(20, 1, 4, 4, generator=g)
    key = fid.real_stats_key("toy", "test", 30, 4, "inception")
    r1 = fid.compute_fid(real, fake, real_cache_key=key)
    r2 = fid.compute_fid(real, fake, real_cache_key=key)
    assert calls == [30, 20, 20]
    assert r1.value == r2.value and r1.feature == fid.PAPER_FEATURE
    assert (fid.outputs.runs_dir() / "fid_stats" / f"{key}--1x4x4.npz").is_file()  # + the shape
    assert r1.image_shape == (1, 4, 4)
    assert not str(fid.outputs.runs_dir()).startswith(str(fid.outputs.repo_root()))  # temp root


def test_real_and_generated_sets_of_different_shapes_are_refused(classifier):
    g = torch.Generator().manual_seed(1)
    real, fake = torch.rand(20, 1, 28, 28, generator=g), torch.rand(20, 1, 14, 14, generator=g)
    with pytest.raises(ValueError, match=r"differ in shape: real \(20, 1, 28, 28\), generated "
                       r"\(20, 1, 14, 14\).*interpolate"):
        fid.compute_fid(real, fake, feature="classifier", classifier=classifier)


def test_the_statistics_cache_is_keyed_on_the_image_shape(monkeypatch):
    """A cache of 64 px real statistics used to accept 32 px fakes under the same key."""
    monkeypatch.setattr(fid, "inception_features",
                        lambda images, **kw: images.flatten(1)[:, :8].double().numpy())
    g = torch.Generator().manual_seed(7)
    key = "shape-test-real"
    big = fid.compute_fid(torch.rand(30, 3, 8, 8, generator=g), torch.rand(20, 3, 8, 8, generator=g),
                          real_cache_key=key)
    assert big.image_shape == (3, 8, 8) and "at 3x8x8" in str(big)
    with pytest.raises(ValueError, match=r"no cached statistics exist at .*shape-test-real--3x4x4"
                       r".*other image shapes only \(shape-test-real--3x8x8.npz\).*3x4x4"):
        fid.compute_fid(None, torch.rand(20, 3, 4, 4, generator=g), real_cache_key=key)
    again = fid.compute_fid(None, torch.rand(20, 3, 8, 8, generator=g), real_cache_key=key)
    assert again.n_real == 30 and again.image_shape == (3, 8, 8)
