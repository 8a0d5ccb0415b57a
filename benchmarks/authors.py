"""The authors' class-conditional VFA / VFA-GAN training procedure, re-implemented as a
timing reference (benchmarks only; nothing in ``fa_utils`` uses it).

What one batch does, as the authors' MNIST / CIFAR-10 scripts do it (described in words in
the project's issue 14 and written here from that description):

1. clamp the encoder's Conv / Linear weights to [-sqrt 2, sqrt 2]; clamp x to
   [0.01, 0.99]; build the one-hot labels in a Python loop over the batch;
2. the class head on x (its result unused);
3. trunk on x, heads mean and log-variance, z = mu + exp(logvar / 2) * eps;
4. the inner step from r = 0 (B copies, requiring grad): z_r = mu(r) + exp(logvar(r) / 2),
   c_r = classifier(r), cost = 1/2 ||z - z_r||^2 + 1/2 ||y - c_r||^2 summed over the
   batch, r_1 = sigmoid(r - grad(cost, r, create_graph=True));
5. loss = sum over the batch of U(0, 1) * KL + 1/2 ||x - r_1||^2; backward; encoder step;
6. g = G(r_1 detached, y); trunk and heads on g and on x (a perceptual term weighted 0);
   G loss 1/2 ||1 - D(g)||^2 summed; G step;
7. D loss 1/2 ||1 - D(x)||^2; D step; a second inner step (4.) for z ~ N(0, I) with the
   same y, g_f = G(r_f, y), D loss 1/2 ||-1 - D(g_f detached)||^2; D step.

"VFA step" is 1-5 (:meth:`AuthorsProcedure.vfa_step`), "full batch" 1-7
(:meth:`AuthorsProcedure.full_batch`). Networks: the encoder of Tables 7-8 with heads
``mu``, ``logvar`` and ``logits`` (:class:`fa_utils.models.Encoder`); their discriminator,
the encoder trunk and Linear(4096, 1) without BatchNorm (an ``Encoder`` with one head
``d``; Table 10's, which the project's VFA-GAN uses, adds BatchNorm after each stride-2
convolution: 192 parameters more on MNIST); and their label-conditional generator
:class:`AuthorsGenerator`. Adam lr 1e-4, betas (0.5, 0.999), torch's default
implementation, for all three. Checked against the authors' own MNIST script run side by
side in one process (interleaved, 7 rounds, paired medians, three runs): this procedure took
0.95-0.98x its time for the VFA step and 1.01x for the full batch.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from fa_utils.models import NEGATIVE_SLOPE, Encoder, architecture


class AuthorsGenerator(nn.Module):
    """The authors' refiner: a Linear(K, H*W) label embedding reshaped to (1, H, W) and
    concatenated to the image as one more channel, then Conv(C+1 -> w) BN LeakyReLU,
    Conv(w -> w) BN LeakyReLU, Conv(w -> C), all 3x3 padding 1, and a sigmoid.

    forward: r (B, C, H, W), one-hot labels (B, K) -> (B, C, H, W).
    """

    def __init__(self, channels: int, size: int, num_classes: int = 10, width: int = 128):
        super().__init__()
        self.size = size
        self.embed = nn.Linear(num_classes, size * size)
        self.net = nn.Sequential(
            nn.Conv2d(channels + 1, width, 3, 1, 1), nn.BatchNorm2d(width),
            nn.LeakyReLU(NEGATIVE_SLOPE),
            nn.Conv2d(width, width, 3, 1, 1), nn.BatchNorm2d(width), nn.LeakyReLU(NEGATIVE_SLOPE),
            nn.Conv2d(width, channels, 3, 1, 1), nn.Sigmoid())

    def forward(self, r: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        e = self.embed(y).view(-1, 1, self.size, self.size)
        return self.net(torch.cat([r, e], 1))


class AuthorsProcedure:
    """The three networks, their optimisers and the authors' per-batch procedure.

    Args:
        dataset: ``"mnist"`` or ``"cifar10"`` (the architectures of Tables 7-8).
        latent_dim: Z; num_classes: K.
        device: where the networks live.

    Attributes:
        encoder, generator, discriminator, opt_e, opt_g, opt_d.
    """

    def __init__(self, dataset: str, latent_dim: int = 128, num_classes: int = 10,
                 device: torch.device | str = "cpu"):
        arch = architecture(dataset)
        self.num_classes = num_classes
        self.latent_dim = latent_dim
        self.encoder = Encoder(arch, {"mu": latent_dim, "logvar": latent_dim,
                                      "logits": num_classes}).to(device)
        self.generator = AuthorsGenerator(arch.channels, arch.size, num_classes).to(device)
        self.discriminator = Encoder(arch, {"d": 1}).to(device)  # no BatchNorm
        adam = dict(lr=1e-4, betas=(0.5, 0.999))
        self.opt_e = torch.optim.Adam(self.encoder.parameters(), **adam)
        self.opt_g = torch.optim.Adam(self.generator.parameters(), **adam)
        self.opt_d = torch.optim.Adam(self.discriminator.parameters(), **adam)

    # steps 1-4 -------------------------------------------------------------------------

    def _clamp(self) -> None:
        with torch.no_grad():
            for m in self.encoder.modules():
                if isinstance(m, (nn.Conv2d, nn.Linear)):
                    m.weight.clamp_(-math.sqrt(2), math.sqrt(2))

    def _one_hot(self, labels: torch.Tensor) -> torch.Tensor:
        y = torch.zeros(labels.shape[0], self.num_classes, device=labels.device)
        for i in range(labels.shape[0]):  # the authors' loop (one sync per example on a GPU)
            y[i][labels[i].item()] = 1.0
        return y

    def _heads(self, x: torch.Tensor):
        h = self.encoder.trunk(x)
        heads = self.encoder.heads
        return heads["mu"](h), heads["logvar"](h), heads["logits"](h)

    def inner_step(self, z: torch.Tensor, y: torch.Tensor, shape) -> torch.Tensor:
        """Step 4: r_1 = sigmoid(r - grad(cost, r)) from B zero starts, with a graph.
        z (B, Z), y (B, K) one-hot, shape (C, H, W) -> (B, C, H, W)."""
        r = torch.zeros(z.shape[0], *shape, device=z.device, requires_grad=True)
        mu, logvar, logits = self._heads(r)
        z_r = mu + torch.exp(logvar / 2)
        cost = 0.5 * (z - z_r).pow(2).sum() + 0.5 * (y - logits).pow(2).sum()
        grad, = torch.autograd.grad(cost, r, create_graph=True)
        return torch.sigmoid(r - grad)

    # steps 1-5 -------------------------------------------------------------------------

    def vfa_step(self, x: torch.Tensor, labels: torch.Tensor):
        """Steps 1-5: one encoder update. x (B, C, H, W), labels (B,) int ->
        (x clamped, r_1 (B, C, H, W) with its graph, one-hot y (B, K), loss as a float)."""
        self._clamp()
        x = x.clamp(0.01, 0.99)
        y = self._one_hot(labels)
        self.encoder.heads["logits"](self.encoder.trunk(x))  # step 2: unused
        mu, logvar, _ = self._heads(x)
        z = mu + torch.exp(logvar / 2) * torch.randn_like(mu)
        r1 = self.inner_step(z, y, x.shape[1:])
        kl = 0.5 * (mu.pow(2) + logvar.exp() - logvar - 1).sum(1)
        beta = torch.rand(x.shape[0], device=x.device)
        loss = (beta * kl).sum() + 0.5 * (x - r1).pow(2).sum()
        self.opt_e.zero_grad()
        loss.backward()
        self.opt_e.step()
        return x, r1, y, loss.item()

    # steps 1-7 -------------------------------------------------------------------------

    def full_batch(self, x: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        """Steps 1-7: one encoder, one G and two D updates. Returns the losses as floats."""
        x, r1, y, loss_e = self.vfa_step(x, labels)
        G = self.generator

        def D(images):
            return self.discriminator(images)["d"]
        g = G(r1.detach(), y)
        mu_g, logvar_g, _ = self._heads(g)
        mu_x, logvar_x, _ = self._heads(x)
        perceptual = (mu_x - mu_g).pow(2).sum() + (logvar_x.exp() - logvar_g.exp()).pow(2).sum()
        loss_g = 0.5 * (1 - D(g)).pow(2).sum() + 0.0 * perceptual
        self.opt_g.zero_grad()
        loss_g.backward()
        self.opt_g.step()

        self.opt_d.zero_grad()
        loss_real = 0.5 * (1 - D(x)).pow(2).sum()
        loss_real.backward()
        self.opt_d.step()
        z = torch.randn(x.shape[0], self.latent_dim, device=x.device)
        r_f = self.inner_step(z, y, x.shape[1:])
        g_f = G(r_f, y)
        self.opt_d.zero_grad()
        loss_fake = 0.5 * (-1 - D(g_f.detach())).pow(2).sum()
        loss_fake.backward()
        self.opt_d.step()
        return {"loss_e": loss_e, "loss_g": loss_g.item(), "loss_d_real": loss_real.item(),
                "loss_d_fake": loss_fake.item()}
