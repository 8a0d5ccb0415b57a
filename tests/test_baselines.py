"""The baselines of Section 5: AE, VAE and least-squares GAN steps on every dataset's shapes,
the decoder the paper's sizes imply, and GAN reconstruction by argmin_z ||x - G(z)||^2."""
import pytest
import torch

from fa_utils import baselines, models, vfa

DATASETS = list(models.ARCHITECTURES)


def _grads_reach(module):
    missing = [n for n, p in module.named_parameters()
               if p.requires_grad and (p.grad is None or not torch.isfinite(p.grad).all()
                                       or (p.dim() > 1 and p.grad.abs().sum() == 0))]
    assert not missing, f"{type(module).__name__}: no gradient for {missing}"


def test_decoder_kind_follows_the_paper_sizes():
    assert isinstance(baselines.make_decoder("mnist", 8), models.MirroredDecoder)  # "auto"
    assert isinstance(baselines.make_decoder("stl10", 8), models.GANGenerator)  # Table 12's
    assert isinstance(baselines.make_decoder("mnist", 8, "table12"), models.GANGenerator)
    assert isinstance(baselines.make_decoder("stl10", 8, "mirrored"), models.MirroredDecoder)
    with pytest.raises(ValueError, match="unknown decoder"):
        baselines.make_decoder("mnist", 8, "resnet")
    with pytest.raises(ValueError, match="unknown dataset"):
        baselines.make_decoder("svhn", 8)


@pytest.mark.parametrize("dataset", DATASETS)
def test_ae_vae_gan_steps_on_every_dataset(dataset):
    torch.manual_seed(0)
    arch = models.architecture(dataset)
    x = torch.rand(2, arch.channels, arch.size, arch.size)
    z_dim = 8
    for kind in ("ae", "vae"):
        heads = {"z": z_dim} if kind == "ae" else vfa.vfa_heads(z_dim)
        enc = models.init_he_(models.Encoder(arch, heads))  # as experiments builds it
        dec = baselines.make_decoder(dataset, z_dim)
        opt = torch.optim.SGD(list(enc.parameters()) + list(dec.parameters()), lr=0.0)
        logs = (baselines.ae_step(enc, dec, opt, x) if kind == "ae" else
                baselines.vae_step(enc, dec, opt, x, betas=torch.tensor([0.2, 0.9])))
        assert all(v == v and abs(v) < 1e9 for v in logs.values()), logs
        _grads_reach(dec)
        _grads_reach(enc) if kind == "ae" else [_grads_reach(m) for m in (enc.trunk, enc.heads)]
    gen = baselines.make_decoder(dataset, z_dim, batchnorm=True)  # the GAN's generator
    disc = baselines.make_discriminator(dataset)
    assert gen(torch.randn(2, z_dim)).shape == x.shape
    opt_g, opt_d = (torch.optim.SGD(m.parameters(), lr=1e-4) for m in (gen, disc))
    before = [p.detach().clone() for p in gen.parameters()]
    logs = baselines.gan_step(gen, disc, opt_g, opt_d, x, z_dim,
                              generator=torch.Generator().manual_seed(0))
    assert set(logs) == {"loss_d", "loss_g"}
    _grads_reach(gen)
    _grads_reach(disc)
    assert any(not torch.equal(a, b) for a, b in zip(before, gen.parameters()))


def test_gan_step_trains_d_on_real_plus_one_and_fake_minus_one():
    torch.manual_seed(0)
    arch = models.Architecture(1, 8, (4,), 16)
    gen = torch.nn.Sequential(torch.nn.Linear(4, 64), torch.nn.Sigmoid(), torch.nn.Unflatten(1, (1, 8, 8)))
    disc = models.Discriminator(arch)
    opt_g = torch.optim.SGD(gen.parameters(), lr=0.0)  # G frozen: D should separate
    opt_d = torch.optim.Adam(disc.parameters(), lr=1e-2)
    x = torch.zeros(16, 1, 8, 8)
    x[:, :, :, :4] = 1.0  # real images: left half white
    g = torch.Generator().manual_seed(0)
    for _ in range(60):
        logs = baselines.gan_step(gen, disc, opt_g, opt_d, x, 4, generator=g)
    disc.eval()
    with torch.no_grad():
        real, fake = disc(x).mean().item(), disc(gen(torch.randn(16, 4))).mean().item()
    assert real > 0.5 and fake < -0.5, (real, fake, logs)


def test_gan_reconstruction_lowers_the_error():
    torch.manual_seed(0)
    gen = baselines.make_decoder("mnist", 16).eval()
    with torch.no_grad():
        x = gen(torch.randn(8, 16))  # targets in the range of G
    images, z, curve = baselines.gan_reconstruct(gen, x, latent_dim=16, steps=60, lr=0.1, seed=3)
    assert images.shape == x.shape and z.shape == (8, 16) and len(curve) == 61
    err = (x - images).pow(2).flatten(1).sum(1).mean().item()
    assert err == pytest.approx(curve[-1], rel=1e-4)
    assert curve[-1] < 0.3 * curve[0], curve[::10]
    assert all(p.requires_grad for p in gen.parameters())  # G's flags restored


def test_gan_reconstruction_fits_each_image_on_its_own():
    torch.manual_seed(0)
    gen = baselines.make_decoder("mnist", 16).eval()
    x = torch.rand(4, 1, 28, 28)
    other = torch.cat([torch.rand(2, 1, 28, 28), x[2:]])  # other images beside x[2:] in the batch
    full, z_full, _ = baselines.gan_reconstruct(gen, x, latent_dim=16, steps=15, seed=5)
    beside, z_beside, _ = baselines.gan_reconstruct(gen, other, latent_dim=16, steps=15, seed=5)
    assert not torch.allclose(full[:2], beside[:2], atol=1e-3)
    assert torch.allclose(full[2:], beside[2:], atol=1e-5)
    assert torch.allclose(z_full[2:], z_beside[2:], atol=1e-5)


def _mnist_models():
    torch.manual_seed(0)
    arch = models.architecture("mnist")
    return (arch, models.Encoder(arch, {"z": 8}), models.Encoder(arch, vfa.vfa_heads(8)),
            baselines.make_decoder("mnist", 8),
            baselines.make_discriminator("mnist"))


def test_baseline_steps_refuse_images_outside_the_unit_range():
    arch, ae_enc, vae_enc, dec, disc = _mnist_models()
    x = torch.rand(2, 1, 28, 28) * 255
    opt = torch.optim.SGD(dec.parameters(), lr=0.1)
    for call in (lambda: baselines.ae_step(ae_enc, dec, opt, x),
                 lambda: baselines.vae_step(vae_enc, dec, opt, x),
                 lambda: baselines.gan_step(dec, disc, opt, opt, x, 8)):
        with pytest.raises(ValueError, match=r"training batch has values.*\[0, 1\].*divide by 255"):
            call()


def test_baseline_steps_refuse_a_non_finite_loss_before_the_update():
    from fa_utils.train import NonFiniteLossError
    arch, ae_enc, vae_enc, dec, disc = _mnist_models()
    x = torch.rand(2, 1, 28, 28)
    with torch.no_grad():
        vae_enc.heads["mu"].bias.fill_(1e20)  # KL's mu^2 overflows
        ae_enc.heads["z"].bias.fill_(float("nan"))  # a NaN latent: the reconstruction is NaN
    opt = torch.optim.SGD(list(dec.parameters()) + list(vae_enc.parameters())
                          + list(ae_enc.parameters()), lr=0.1)
    before = [p.detach().clone() for p in list(dec.parameters()) + list(vae_enc.parameters())]
    with pytest.raises(NonFiniteLossError, match=r"VAE loss is not finite.*KL.*nothing was written"):
        baselines.vae_step(vae_enc, dec, opt, x)
    with pytest.raises(NonFiniteLossError, match=r"AE loss is not finite \(rec NaN for 2 of 2"):
        baselines.ae_step(ae_enc, dec, opt, x)
    assert all(torch.equal(a, b) for a, b in zip(before, list(dec.parameters()) + list(vae_enc.parameters())))
    with torch.no_grad():
        next(p for p in dec.parameters() if p.dim() == 1).fill_(float("nan"))
    d_before = [p.detach().clone() for p in disc.parameters()]
    with pytest.raises(NonFiniteLossError, match=r"GAN discriminator loss.*G's images") as info:
        baselines.gan_step(dec, disc, opt, torch.optim.SGD(disc.parameters(), lr=0.1), x, 8)
    assert info.value.term == "adversarial"
    assert all(torch.equal(a, b) for a, b in zip(d_before, disc.parameters()))

def test_he_initialisation_has_the_stated_scale():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(400, 300), torch.nn.Conv2d(16, 32, 3),
                              torch.nn.ConvTranspose2d(64, 8, 3, 2))
    models.init_he_(net)
    gain = (2 / (1 + 0.01 ** 2)) ** 0.5
    for layer, fan in zip(net, (400, 16 * 9, 64 * 9)):  # the inputs each output sums over
        assert layer.weight.std().item() == pytest.approx(gain / fan ** 0.5, rel=0.05), layer
        assert torch.count_nonzero(layer.bias) == 0


def test_the_baseline_autoencoder_depends_on_its_input_at_initialisation():
    """What made the AE of Tables 7-9 + mirrored decoder stay at the mean image: with
    PyTorch's default initialisation its output barely depends on the input (measured: std
    over images 4e-7 on MNIST digits), so the first hundreds of steps only learn the mean.
    He initialisation keeps the signal through the 16 layers."""
    from fa_utils import data
    x = data.mnist_sample(0)[0][:32]
    torch.manual_seed(0)
    enc = models.init_he_(models.Encoder(models.architecture("mnist"), {"z": 32}))
    dec = baselines.make_decoder("mnist", 32)
    default_enc = models.Encoder(models.architecture("mnist"), {"z": 32})
    default_dec = models.MirroredDecoder(models.architecture("mnist"), 32)
    with torch.no_grad():
        spread = dec(enc(x)["z"]).std(0).mean().item()
        default_spread = default_dec(default_enc(x)["z"]).std(0).mean().item()
    assert spread > 5e-3 and default_spread < 1e-4, (spread, default_spread)


def test_the_gan_generator_has_batchnorm_and_the_decoder_has_none():
    gen = baselines.make_decoder("mnist", 8, batchnorm=True)  # the GAN's generator
    dec = baselines.make_decoder("mnist", 8)
    bn = [m for m in gen.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    convs = [m for m in gen.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
    assert len(bn) == len(convs) - 1  # after every convolution but the output one
    assert sum(isinstance(m, torch.nn.BatchNorm1d) for m in gen.modules()) == 2  # both Linear layers
    assert not any(isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)) for m in dec.modules())
    stl = baselines.make_decoder("stl10", 8, batchnorm=True)
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in stl.modules()) == 7  # Table 12's 7 transposed convs
    assert sum(isinstance(m, torch.nn.BatchNorm1d) for m in stl.modules()) == 1


@pytest.mark.parametrize("dataset", DATASETS)
def test_both_discriminators_score_each_image_of_every_dataset(dataset):
    arch = models.architecture(dataset)
    x = torch.rand(3, arch.channels, arch.size, arch.size)
    for kind, cls in (("table10", models.Discriminator), ("dcgan", models.DCGANDiscriminator)):
        disc = baselines.make_discriminator(dataset, kind)
        assert isinstance(disc, cls) and disc(x).shape == (3,)
    with pytest.raises(ValueError, match="unknown discriminator"):
        baselines.make_discriminator(dataset, "patchgan")
