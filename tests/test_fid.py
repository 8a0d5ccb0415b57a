"""Tests of fa_utils.fid: Frechet distance (Eq. 10) and KID through torchmetrics, input
conversion, the N < D policy, offline behaviour (no network is ever touched: sockets are
blocked and pytorch-fid's download is replaced by an "offline" error), the judge (trained
and cached by fa_utils.experiments.train_judge) and the label-free autoencoder fallback
(notebook 04's cell ``fid-autoencoder``).

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

from torch.utils.data import TensorDataset

from fa_utils import config, experiments, fid, metrics, outputs
from fa_utils.data import mnist_sample
from notebook_code import cell_namespace

#: Notebook 04's label-free fallback: FeatureAutoencoder, train_feature_autoencoder.
AE = cell_namespace("04_vfa_gan", "fid-autoencoder", "fid-autoencoder-train")


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
    return attempts


@pytest.fixture(scope="module")
def mnist():
    x, y = mnist_sample(0)
    return x, y


@pytest.fixture(scope="module")
def judge_run(tmp_path_factory):
    """The judge at a tiny size: 1,000 training digits of the MNIST sample, 3 epochs, held
    out: the sample's 500 test digits; checkpoints under a temporary output root."""
    root = tmp_path_factory.mktemp("judge")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(outputs.OUTPUT_ROOT_ENV, str(root))
        cfg = config.make_config("vfagan", "smoke", n_train=1000, n_test=500, judge_epochs=3,
                                 device="cpu")
        data = experiments.load_image_data(cfg, verbose=False)
        judge, acc = experiments.train_judge(cfg, data, progress=False)
        yield cfg, data, judge, acc, root


def _pixels(d):
    """The images' first d pixels as a feature module (D = d)."""
    return fid.feature_of(lambda x: x.flatten(1)[:, :d], d, f"pixels-{d}",
                          owner=torch.nn.Linear(1, 1))


def _gauss(n, d, seed, shift=0.0):
    return np.random.default_rng(seed).normal(size=(n, d)) + shift


# --------------------------------------------------------------------------------------
# Frechet distance and KID (torchmetrics)
# --------------------------------------------------------------------------------------


def test_frechet_distance_of_a_pure_shift_is_the_squared_shift_and_kid_grows_with_it():
    """Same pixels moved by +0.25 (4 pixels as the feature): covariances equal, so the
    Frechet distance is ||shift||^2 = 4 x 0.0625; KID of a set with itself is ~0 and grows
    with the shift."""
    g = torch.Generator().manual_seed(0)
    real = 0.5 * torch.rand(300, 1, 2, 2, generator=g)
    same, near, far = fid.distances(real, [real, real + 0.1, real + 0.25], _pixels(4),
                                    subset_size=100)
    assert same.value == pytest.approx(0.0, abs=1e-6) and far.value == pytest.approx(0.25, rel=1e-4)
    assert abs(same.kid) < 3 * same.kid_std + 1e-6 and same.kid_std >= 0
    assert near.kid > 3 * near.kid_std and far.kid > 5 * near.kid
    assert (far.n_real, far.n_fake, far.feature) == (300, 300, "pixels-4") and not far.comparable


def test_distances_refuse_mismatched_shapes_and_single_images():
    g = torch.Generator().manual_seed(1)
    real, fake = torch.rand(20, 1, 28, 28, generator=g), torch.rand(20, 1, 14, 14, generator=g)
    with pytest.raises(ValueError, match=r"differ in shape: real \(20, 1, 28, 28\), fakes\[0\] "
                       r"\(20, 1, 14, 14\).*interpolate"):
        fid.distances(real, [fake], _pixels(4))
    with pytest.raises(ValueError, match=r"fakes\[1\] has 1 image"):
        fid.distances(real, [real, real[:1]], _pixels(4))


def test_only_inception_with_at_least_2048_images_is_comparable():
    assert fid._comparability(fid.PAPER_FEATURE, 10000, 10000, 2048) == (True, "")
    ok, note = fid._comparability(fid.PAPER_FEATURE, 2048, 5000, 2048)
    assert ok and "10000" in note
    ok, note = fid._comparability(fid.PAPER_FEATURE, 2047, 10000, 2048)
    assert not ok and "N < D (2047 < 2048)" in note
    ok, note = fid._comparability("judge-128", 10000, 10000, 128)
    assert not ok and "never comparable" in note


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


def test_inception_feature_feeds_three_channels_and_flattens_pool3(monkeypatch):
    """pytorch-fid's network replaced by a recorder: (B, 2048, 1, 1) like block 3's output."""
    import pytorch_fid.inception as pfi
    seen = []

    class Recorder(torch.nn.Module):
        BLOCK_INDEX_BY_DIM = {fid.INCEPTION_DIM: 3}

        def __init__(self, blocks):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x):
            seen.append(tuple(x.shape))
            return [x.mean(dim=(1, 2, 3)).reshape(-1, 1, 1, 1).expand(-1, fid.INCEPTION_DIM, 1, 1)]

    monkeypatch.setattr(pfi, "InceptionV3", Recorder)
    feature = fid.inception_feature()
    x = torch.rand(7, 1, 6, 6)
    f = feature(x)
    assert seen == [(7, 3, 6, 6)] and f.shape == (7, 2048) and f.dtype == torch.float64
    assert feature.feature_name == fid.PAPER_FEATURE and feature.num_features == 2048
    torch.testing.assert_close(f[:, 0], x.mean(dim=(1, 2, 3)).double())


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
    feature = fid.inception_feature()
    f = feature(torch.rand(2, 1, 28, 28))
    assert f.shape == (2, 2048) and torch.isfinite(f).all() and (f >= 0).all()
    model = feature.owner
    assert not model.training
    assert torch.all(model.blocks[0][0].conv.weight == 0.0123)
    assert offline == {"download": 0, "socket": 0}


def test_missing_weights_raise_inception_unavailable_offline_without_network(offline):
    with pytest.raises(fid.InceptionUnavailable) as info:
        fid.inception_feature()
    msg = str(info.value)
    assert "\n" not in msg
    for part in (fid.INCEPTION_WEIGHTS_FILE, fid.INCEPTION_WEIGHTS_URL, fid.WEIGHTS_ENV,
                 "weights_path", "offline"):
        assert part in msg
    assert offline == {"download": 1, "socket": 0}


def test_given_weights_path_that_does_not_exist_is_named(offline, tmp_path):
    missing = tmp_path / "nope.pth"
    with pytest.raises(fid.InceptionUnavailable, match="nope.pth"):
        fid.inception_feature(missing)
    assert offline == {"download": 0, "socket": 0}


def test_corrupt_weights_file_raises_inception_unavailable(offline, tmp_path):
    bad = tmp_path / fid.INCEPTION_WEIGHTS_FILE
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(fid.InceptionUnavailable, match="could not be loaded"):
        fid.inception_feature(bad)


def _real_weights():
    try:
        return fid.inception_weights_path()
    except fid.InceptionUnavailable:
        return None


@pytest.mark.skipif(_real_weights() is None,
                    reason=f"{fid.INCEPTION_WEIGHTS_FILE} not found locally (no network here): "
                           f"set {fid.WEIGHTS_ENV} or put it in torch hub's checkpoints/")
def test_real_inception_weights_give_2048_nonnegative_features(mnist):
    f = fid.inception_feature()(mnist[0][:4])
    assert f.shape == (4, 2048) and torch.isfinite(f).all() and (f >= 0).all() and f.std() > 0


# --------------------------------------------------------------------------------------
# The judge
# --------------------------------------------------------------------------------------


def test_shifts_move_each_image_by_at_most_two_pixels_and_keep_it():
    x = torch.zeros(50, 1, 9, 9)
    x[:, 0, 4, 4] = 1.0
    y = fid.shift_images(x, 2, torch.Generator().manual_seed(0))
    where = y[:, 0].flatten(1).argmax(1)
    rows, cols = where // 9, where % 9
    assert torch.equal(y.sum((1, 2, 3)), x.sum((1, 2, 3)))  # nothing lost at 2 px from the edge
    assert (rows - 4).abs().max() == 2 and (cols - 4).abs().max() == 2
    assert len(set(zip(rows.tolist(), cols.tolist()))) > 10  # each image its own shift
    assert torch.equal(y, fid.shift_images(x, 2, torch.Generator().manual_seed(0)))


def test_the_judge_at_a_tiny_size_recognises_held_out_digits_and_is_cached(judge_run):
    cfg, data, judge, acc, root = judge_run
    assert acc > 0.85  # 1,000 digits, 3 epochs (quick: 4,500 digits, 20 epochs, >= 0.97)
    top, cls = fid.recognise(judge, data.test_x)
    assert (cls == data.test_y).float().mean() == pytest.approx(acc)
    (ckpt,) = (root / "runs" / "checkpoints").glob("judge-mnist-*-smoke.pt")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(outputs.OUTPUT_ROOT_ENV, str(root))
        again, acc2 = experiments.train_judge(cfg, data, progress=False)  # loaded, not retrained
        other = experiments.judge_identity(config.make_config("vfa", "smoke", n_train=1000, n_test=500))
    assert acc2 == acc and all(torch.equal(a, b) for a, b in
                               zip(judge.state_dict().values(), again.state_dict().values()))
    assert other == experiments.judge_identity(cfg)  # notebooks 03 and 04 share one judge


def test_the_judge_refuses_unlabeled_data_with_the_existing_message():
    x = torch.rand(8, 3, 16, 16)
    unlabeled = experiments.ImageData(TensorDataset(x, torch.full((8,), -1)), x,
                                      torch.full((8,), -1), "fabricated")
    cfg = config.make_config("vfagan", "smoke", dataset="celeba")
    with pytest.raises(ValueError, match="needs class labels.*train_feature_autoencoder"):
        experiments.train_judge(cfg, unlabeled, progress=False)
    with pytest.raises(ValueError, match="shape"):
        fid.check_labels(torch.zeros(7, dtype=torch.long), 8)


def _real_blurred_noise(x, feature):
    """Distances from held-out digits 2000-3499 to: other held-out digits (3500-4999), the
    same blurred (5x5 box), uniform noise; 1,500 images each."""
    a, b = x[2000:3500], x[3500:5000]
    blurred = F.avg_pool2d(b, 5, stride=1, padding=2, count_include_pad=False)
    noise = torch.rand(b.shape, generator=torch.Generator().manual_seed(1))
    results = fid.distances(a, [b, blurred, noise], feature)
    assert all(not r.comparable for r in results)
    return [r.value for r in results], [r.kid for r in results]


def test_judge_features_rank_real_above_blurred_and_noise(mnist, judge_run):
    fd, kid = _real_blurred_noise(mnist[0], fid.judge_feature(judge_run[2]))
    assert fd[0] < fd[1] < fd[2], fd
    assert fd[0] < 0.2 * fd[1] and kid[0] < 0.01 * min(kid[1:]), (fd, kid)


def test_frechet_feature_offline_prints_one_line_and_falls_back(offline, judge_run, capsys):
    feature = fid.frechet_feature(lambda: fid.judge_feature(judge_run[2]))
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    assert fid.INCEPTION_WEIGHTS_FILE in out and "NOT comparable" in out and "judge-128" in out
    assert feature.feature_name == "judge-128" and feature.num_features == 128
    assert offline["socket"] == 0


# --------------------------------------------------------------------------------------
# The label-free fallback (unlabeled data)
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def autoencoder(mnist):
    """The label-free fallback, trained on 2,000 training digits; labels never seen."""
    return AE.train_feature_autoencoder(mnist[0][:2000], seed=0)


def _ae_feature(ae):
    return fid.feature_of(ae.features, ae.feature_dim, ae.feature_name, owner=ae)


def test_autoencoder_fallback_ranks_real_above_blurred_and_noise(mnist, autoencoder):
    assert autoencoder.train_mse < 0.05  # it reconstructs: the features describe the image
    fd, kid = _real_blurred_noise(mnist[0], _ae_feature(autoencoder))
    assert fd[0] < fd[1] < fd[2], fd
    assert fd[0] < 0.5 * fd[1] and kid[0] < 0.1 * min(kid[1:]), (fd, kid)


def test_feature_autoencoder_on_colour_64_is_seeded_and_leaves_the_global_rng():
    x = torch.rand(12, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    state = torch.get_rng_state()
    a = AE.train_feature_autoencoder(x, epochs=1, min_steps=4, batch_size=4, seed=3)
    assert torch.equal(torch.get_rng_state(), state)
    b = AE.train_feature_autoencoder(x, epochs=1, min_steps=4, batch_size=4, seed=3)
    with torch.no_grad():
        fa_, fb = _ae_feature(a)(x), _ae_feature(b)(x)
    assert fa_.shape == (12, 128) and torch.equal(fa_, fb)
    assert a(x[:2]).shape == (2, 3, 64, 64)
    with pytest.raises(ValueError, match="square"):
        AE.train_feature_autoencoder(torch.rand(4, 3, 32, 16))
