"""Networks only: Appendix B (Tables 7-12) for every dataset, and the toy MLP (Section 3.2).

Conventions (Appendix B): ``Conv2d(f, k, s, p)`` has f filters, a k x k kernel, stride s
and padding p; every activation is LeakyReLU with negative slope 0.01. Images are
(B, C, H, W) float in [0, 1]; latents are (B, Z).

Where a table is ambiguous we say so in the class docstring:

* Table 11 (FA generator) lists 7x7 convolutions with padding 1, which would shrink a
  64x64 image to 52x52 although the generator maps an image to an image of the same size
  ("refines r into G(r)"). We use padding 3 so that every convolution keeps the size.
  BatchNorm follows each convolution but the last (Section 4: "only the generator utilizes
  batch normalization").
* Table 12 (GAN generator) for MNIST: 4 -> 8 -> 16 -> 32 cannot reach 28; the first
  stride-2 transposed convolution uses ``output_padding=0`` there (4 -> 7 -> 14 -> 28).
"""
from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import math
from dataclasses import dataclass
from types import MappingProxyType
from typing import Iterator, Mapping, NamedTuple, Optional, Sequence, Union

import torch
from torch import nn

from .losses import bounded_logvar

NEGATIVE_SLOPE = 0.01


@dataclass(frozen=True)
class Architecture:
    """The encoder shape of one dataset (Tables 7-9)."""

    channels: int
    size: int
    widths: tuple[int, ...]  # one (stride 1, stride 2) conv pair per width
    hidden: int  # width of the Linear layer after flatten

    @property
    def feature_size(self) -> int:
        """Spatial size after the conv pairs (each stride-2 conv halves, rounding up)."""
        s = self.size
        for _ in self.widths:
            s = (s + 1) // 2
        return s

    @property
    def flat_dim(self) -> int:
        return self.widths[-1] * self.feature_size ** 2


#: The paper's encoder shapes (read-only).
ARCHITECTURES: Mapping[str, Architecture] = MappingProxyType({
    "mnist": Architecture(1, 28, (32, 64), 4096),  # Table 7
    "cifar10": Architecture(3, 32, (32, 64, 128), 2048),  # Table 8
    "celeba": Architecture(3, 64, (32, 64, 128, 256), 4096),  # Table 9
    "stl10": Architecture(3, 64, (32, 64, 128, 256), 4096),  # Table 9
})

#: The width factor of :func:`architecture` in the current context (1: the paper's); set
#: only by :func:`scaled_architectures`, per thread / asyncio task, restored on exit.
_WIDTH_SCALE: contextvars.ContextVar[float] = contextvars.ContextVar("width_scale", default=1.0)


def scaled_architecture(arch: Architecture, scale: float) -> Architecture:
    """``arch`` with its conv widths and hidden width times ``scale`` (rounded; at least 4
    and 16); ``scale == 1``: ``arch``. Raises ValueError: ``scale`` not in (0, 1]."""
    if not 0 < scale <= 1:
        raise ValueError(f"scale must be in (0, 1], got {scale!r}")
    if scale == 1:
        return arch
    return dataclasses.replace(arch, widths=tuple(max(4, round(w * scale)) for w in arch.widths),
                               hidden=max(16, round(arch.hidden * scale)))


@contextlib.contextmanager
def scaled_architectures(scale: float) -> Iterator[None]:
    """Inside the block every :func:`architecture` is the paper's scaled by ``scale``
    (:func:`scaled_architecture`; nested blocks do not compound; the smoke profile's
    ``width_scale``). A context variable: other threads keep the paper's sizes.
    Raises ValueError: ``scale`` not in (0, 1]."""
    if not 0 < scale <= 1:
        raise ValueError(f"scale must be in (0, 1], got {scale!r}")
    token = _WIDTH_SCALE.set(float(scale))
    try:
        yield
    finally:
        _WIDTH_SCALE.reset(token)


def architecture(dataset: str) -> Architecture:
    """Tables 7-9's :class:`Architecture` of ``dataset`` (scaled inside
    :func:`scaled_architectures`). Raises ValueError: unknown dataset."""
    try:
        arch = ARCHITECTURES[dataset]
    except KeyError:
        raise ValueError(f"unknown dataset {dataset!r}; choose one of {list(ARCHITECTURES)}") from None
    return scaled_architecture(arch, _WIDTH_SCALE.get())


def _act(inplace: bool = False) -> nn.LeakyReLU:
    return nn.LeakyReLU(NEGATIVE_SLOPE, inplace=inplace)


def _norm(channels: int, batchnorm: bool) -> list[nn.Module]:
    return [nn.BatchNorm2d(channels)] if batchnorm else []


def _norm1d(features: int, batchnorm: bool) -> list[nn.Module]:
    return [nn.BatchNorm1d(features)] if batchnorm else []


def conv_trunk(arch: Architecture, batchnorm: bool = False) -> nn.Sequential:
    """The convolutional trunk of Tables 7-10 followed by Flatten, Linear(hidden), LeakyReLU.

    Shapes: (B, C, H, W) -> (B, hidden). With ``batchnorm`` (Table 10, discriminator) a
    BatchNorm2d follows every stride-2 convolution's activation.
    """
    layers: list[nn.Module] = []
    c = arch.channels
    for w in arch.widths:
        layers += [nn.Conv2d(c, w, 3, 1, 1), _act(), nn.Conv2d(w, w, 3, 2, 1), _act()]
        if batchnorm:
            layers.append(nn.BatchNorm2d(w))
        c = w
    layers += [nn.Flatten(), nn.Linear(arch.flat_dim, arch.hidden), _act()]
    return nn.Sequential(*layers)


class Encoder(nn.Module):
    """The FA / VFA encoder of Tables 7-9 with named linear heads.

    ``heads`` maps a head name to its width, e.g. ``{"z": 128}`` for plain FA or
    ``{"mu": 128, "logvar": 128, "logits": 10}`` for conditional VFA (Section 3.3-3.4:
    mean, log-variance and a class layer parallel to them). Each head is a
    ``Linear(hidden, width)`` on the trunk's features ("Linear(Z)" in the tables).

    forward: (B, C, H, W) -> dict name -> (B, width).
    """

    def __init__(self, arch: Architecture, heads: Mapping[str, int]):
        super().__init__()
        if not heads:
            raise ValueError("an Encoder needs at least one head, e.g. heads={'z': 128}")
        self.arch = arch
        self.trunk = conv_trunk(arch)
        self.heads = nn.ModuleDict({name: nn.Linear(arch.hidden, int(width))
                                    for name, width in heads.items()})

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.trunk(x)
        return {name: head(h) for name, head in self.heads.items()}


# --------------------------------------------------------------------------------------
# Read-outs of an Encoder's heads: what the inner energy's E(r) reads (fa, vfa)
# --------------------------------------------------------------------------------------


class MeanPlusSigma(NamedTuple):
    """The read-out mean + exp(logvar / 2) of two heads (VFA's ``mu + sigma`` side; the
    log-variance bounded by :func:`fa_utils.losses.bounded_logvar`)."""

    mean: str = "mu"
    logvar: str = "logvar"


#: A read-out of an encoder's dict of heads: a head name, a :class:`MeanPlusSigma`, or a
#: sequence of those (concatenated along dim 1); None: the network's own output.
Head = Union[str, MeanPlusSigma, Sequence[Union[str, MeanPlusSigma]], None]


def head_items(head: Head) -> tuple:
    """The read-out's items: head names and :class:`MeanPlusSigma` (``()`` for None)."""
    if head is None:
        return ()
    return (head,) if isinstance(head, (str, MeanPlusSigma)) else tuple(head)


def head_names(head: Head) -> list:
    """The names of the heads the read-out uses."""
    return [n for item in head_items(head)
            for n in (item if isinstance(item, MeanPlusSigma) else (item,))]


def read_out(out: dict, head: Head) -> torch.Tensor:
    """``head`` read off an encoder's outputs ``out`` (name -> (B, width)): (B, total width).

    Raises:
        KeyError: a head the encoder does not have (the message lists its heads).
    """
    for name in head_names(head):
        if name not in out:
            raise KeyError(f"encoder has no head {name!r}; its heads are {list(out)}")
    parts = [out[i.mean] + (0.5 * bounded_logvar(out[i.logvar])).exp()
             if isinstance(i, MeanPlusSigma) else out[i] for i in head_items(head)]
    return parts[0] if len(parts) == 1 else torch.cat(parts, 1)


def make_encoder(dataset: str, heads: Mapping[str, int]) -> Encoder:
    """The encoder of ``dataset`` (Tables 7-9) with orthogonal initialisation (Section 4)."""
    enc = Encoder(architecture(dataset), heads)
    init_orthogonal_(enc)
    return enc


class Discriminator(nn.Module):
    """Table 10: the encoder trunk with BatchNorm after each stride-2 conv, then Linear(1).

    No sigmoid (least-squares GAN). forward: (B, C, H, W) -> (B,).
    """

    def __init__(self, arch: Architecture):
        super().__init__()
        self.trunk = conv_trunk(arch, batchnorm=True)
        self.out = nn.Linear(arch.hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.trunk(x)).squeeze(1)


class DCGANDiscriminator(nn.Module):
    """A DCGAN-style discriminator (Radford et al. 2016): stride-2 4x4 convolutions with
    64, 128, ... filters, one per stride-2 convolution of the dataset's encoder (MNIST 2,
    CIFAR-10 3, CelebA / STL-10 4), LeakyReLU(0.2), BatchNorm after every convolution but
    the first, then Linear(1). No sigmoid (least-squares GAN). (B, C, H, W) -> (B,).

    The GAN baseline's discriminator at the smoke and quick profiles (see
    :mod:`fa_utils.baselines`; why not Table 10's there: docs/baselines.md, "The GAN's
    discriminator at smoke and quick").
    """

    def __init__(self, arch: Architecture):
        super().__init__()
        layers: list[nn.Module] = []
        c, size = arch.channels, arch.size
        for i in range(len(arch.widths)):
            w = 64 * 2 ** i
            layers.append(nn.Conv2d(c, w, 4, 2, 1))
            if i:
                layers.append(nn.BatchNorm2d(w))
            layers.append(nn.LeakyReLU(0.2))
            c, size = w, size // 2
        self.trunk = nn.Sequential(*layers, nn.Flatten())
        self.out = nn.Linear(c * size * size, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.trunk(x)).squeeze(1)


class FAGenerator(nn.Module):
    """Table 11: refines an FA image r into G(r), same shape (B, C, H, W) -> (B, C, H, W).

    Conv2d(128, 7) + BatchNorm + LeakyReLU, twice, then Conv2d(C, 7) + Sigmoid; padding 3
    keeps the resolution (the table's padding 1 would shrink it; see module docstring).
    The activations work in place on BatchNorm's outputs (the same values, about 8 % less
    time for G's forward and backward on a CPU: no new 128-channel tensor per layer).
    """

    def __init__(self, channels: int, width: int = 128, kernel: int = 7):
        super().__init__()
        p = kernel // 2
        self.net = nn.Sequential(
            nn.Conv2d(channels, width, kernel, 1, p), nn.BatchNorm2d(width), _act(True),
            nn.Conv2d(width, width, kernel, 1, p), nn.BatchNorm2d(width), _act(True),
            nn.Conv2d(width, channels, kernel, 1, p), nn.Sigmoid(),
        )

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        return self.net(r)


class GANGenerator(nn.Module):
    """Table 12: Linear(Z, 4096) -> (256, 4, 4) -> ConvTranspose2d stack -> Conv2d -> Sigmoid.

    CelebA / STL-10 (64x64): seven 3x3 transposed convs alternating stride 2 and 1 (filters
    256, 128, 128, 64, 64, 32, 32), 4 -> 64. MNIST / CIFAR-10 drop the last two (Table 12
    caption) and reach 32x32; for MNIST the first upsampling uses ``output_padding=0`` to give 28x28.
    Also the VAE baseline's decoder on STL-10 (see :mod:`fa_utils.baselines`). ``batchnorm``:
    a BatchNorm after the Linear layer and every transposed convolution (as
    :class:`MirroredDecoder`).
    forward: (B, Z) -> (B, C, H, W).
    """

    def __init__(self, arch: Architecture, latent_dim: int, batchnorm: bool = False):
        super().__init__()
        self.fc = nn.Sequential(nn.Linear(latent_dim, 4096), *_norm1d(4096, batchnorm), _act())
        # (filters, stride) of Table 12's transposed convolutions, kernel 3, padding 1
        spec = [(256, 2), (128, 1), (128, 2), (64, 1), (64, 2), (32, 1), (32, 2)]
        if arch.size != 64:
            spec = spec[:-2]
        layers: list[nn.Module] = []
        c, s = 256, 4
        first_up = True
        for w, stride in spec:
            if stride == 2:
                out_pad = 0 if (arch.size == 28 and first_up) else 1
                first_up = False
                s = 2 * s - 1 + out_pad
            else:
                out_pad = 0
            layers += [nn.ConvTranspose2d(c, w, 3, stride, 1, output_padding=out_pad),
                       *_norm(w, batchnorm), _act()]
            c = w
        if s != arch.size:  # pragma: no cover - guarded by the tests of every dataset
            raise AssertionError(f"GANGenerator reaches {s}, expected {arch.size}")
        layers += [nn.Conv2d(c, arch.channels, 3, 1, 1), nn.Sigmoid()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(self.fc(z).view(-1, 256, 4, 4))


class MirroredDecoder(nn.Module):
    """The encoder of Tables 7-9 mirrored: Linear(Z, hidden), Linear(hidden, flat),
    then transposed convs back to the image, Sigmoid. (B, Z) -> (B, C, H, W).

    The decoder of the AE and VAE baselines and the GAN baseline's generator (the sizes of
    Tables 3-5 imply it, see :mod:`fa_utils.baselines`). ``batchnorm``: a BatchNorm after
    every layer but the last (BatchNorm1d after the Linear layers, BatchNorm2d after the
    convolutions; Section 4: "the generator utilizes batch normalization after each
    convolution"). The GAN baseline uses it: without it its generator collapsed to one image.
    """

    def __init__(self, arch: Architecture, latent_dim: int, batchnorm: bool = False):
        super().__init__()
        self.arch = arch
        layers: list[nn.Module] = [nn.Linear(latent_dim, arch.hidden), *_norm1d(arch.hidden, batchnorm),
                                   _act(), nn.Linear(arch.hidden, arch.flat_dim),
                                   *_norm1d(arch.flat_dim, batchnorm), _act(),
                                   nn.Unflatten(1, (arch.widths[-1], arch.feature_size,
                                                    arch.feature_size))]
        widths = list(arch.widths[::-1])
        sizes = [arch.size]
        for _ in arch.widths:
            sizes.append((sizes[-1] + 1) // 2)
        sizes = sizes[::-1]  # e.g. 7, 14, 28
        for i, w in enumerate(widths):
            nxt = widths[i + 1] if i + 1 < len(widths) else arch.channels
            out_pad = sizes[i + 1] - (2 * sizes[i] - 1)
            layers += [nn.ConvTranspose2d(w, w, 3, 2, 1, output_padding=out_pad), *_norm(w, batchnorm),
                       _act()]
            if nxt == arch.channels:
                layers += [nn.Conv2d(w, nxt, 3, 1, 1), nn.Sigmoid()]
            else:
                layers += [nn.Conv2d(w, nxt, 3, 1, 1), *_norm(nxt, batchnorm), _act()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class ToyMLP(nn.Module):
    """Section 3.2: 1 -> hidden -> hidden -> out, fully connected, LeakyReLU(0.01).

    ``out = 1`` is the plain regressor of Figure 2a; ``out = 2`` gives (f, l) of Figure 2b,
    f approximating sin(3 pi x) and l the extra latent neuron. (B, 1) -> (B, out).
    """

    def __init__(self, hidden: int = 1024, out: int = 2):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(1, hidden), _act(), nn.Linear(hidden, hidden), _act(),
                                 nn.Linear(hidden, out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def init_orthogonal_(module: nn.Module, gain: float = 1.0, zero_bias: bool = False) -> nn.Module:
    """Orthogonal init of every Conv/Linear weight as an (out, in * k * k) matrix (Section 4).
    Biases keep PyTorch's default unless ``zero_bias`` (then, from r_0 = 0, every LeakyReLU
    sits at its kink and the first FA step shrinks by 0.01 per layer: docs/method.md
    section 1). Returns ``module``."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.orthogonal_(m.weight, gain=gain)
            if zero_bias and m.bias is not None:
                nn.init.zeros_(m.bias)
    return module


def init_he_(module: nn.Module, negative_slope: float = NEGATIVE_SLOPE) -> nn.Module:
    """He (Kaiming-normal) init of every Conv/ConvTranspose/Linear weight for
    LeakyReLU(``negative_slope``), zero biases (the baselines'; with PyTorch's default the
    16-layer AE stays at the mean image). std = gain / sqrt(fan), fan the inputs each output
    sums over (a transposed convolution's ``fan_out``). Returns ``module``."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            mode = "fan_out" if isinstance(m, nn.ConvTranspose2d) else "fan_in"
            nn.init.kaiming_normal_(m.weight, a=negative_slope, mode=mode,
                                    nonlinearity="leaky_relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return module


def clampable_weights(module: nn.Module) -> list[torch.Tensor]:
    """The Conv/Linear weights (not biases, not BatchNorm) that Eq. 9 clamps."""
    return [m.weight for m in module.modules()
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear))]


def clamp_weights_(module: nn.Module | list, bound: float = math.sqrt(2.0)) -> None:
    """Eq. 9: the Conv/Linear weights of ``module`` (or a list of weights) clamped to
    [-bound, bound] in place; sqrt(2) from the one-weight recursion (Appendix 7.1). Biases
    and normalisation parameters are left alone (the authors' code). CUDA: one
    ``torch._foreach`` pair; elsewhere ``clamp_`` per weight (docs/choices.md section 13)."""
    weights = module if isinstance(module, (list, tuple)) else clampable_weights(module)
    if not weights:
        return
    with torch.no_grad():
        if weights[0].device.type == "cuda":
            torch._foreach_clamp_min_(weights, -bound)
            torch._foreach_clamp_max_(weights, bound)
        else:
            for w in weights:
                w.clamp_(-bound, bound)


def to_device(module: nn.Module, device: torch.device | str,
              channels_last: Optional[bool] = None) -> nn.Module:
    """``module`` moved to ``device``, its 4-d weights in channels_last memory format
    where that measured faster: on a CPU (``None``, the default; docs/choices.md
    section 14); ``True`` / ``False`` force it. Inputs may stay contiguous: a convolution
    with channels_last weights returns channels_last outputs. The values are those of the
    contiguous network within fp32 rounding. Returns the module (moved in place)."""
    device = torch.device(device)
    module = module.to(device)
    if channels_last is None:
        channels_last = device.type == "cpu"
    return module.to(memory_format=torch.channels_last) if channels_last else module


def count_parameters(module: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters of ``module``."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
