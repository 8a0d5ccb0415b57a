"""The networks of Appendix B (Tables 7-12): images (B, C, H, W) in [0, 1], latents (B, Z)."""
from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import math
from types import MappingProxyType
from typing import Iterator, Mapping, Sequence, Union

import torch
from torch import nn

NEGATIVE_SLOPE = 0.01
#: Bounds of the log-variance: exp(20) keeps the variance and KL inside float32, exp(-30) > 0.
LOGVAR_MIN, LOGVAR_MAX = -30.0, 20.0
_WEIGHTED = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)


@dataclasses.dataclass(frozen=True)
class Architecture:
    """A dataset's encoder shape (Tables 7-9): a conv pair per width, then Linear(hidden)."""

    channels: int
    size: int
    widths: tuple[int, ...]
    hidden: int

    @property
    def flat_dim(self) -> int:
        """The features after the conv pairs (each stride-2 conv halves, rounding up)."""
        return self.widths[-1] * math.ceil(self.size / 2 ** len(self.widths)) ** 2


ARCHITECTURES: Mapping[str, Architecture] = MappingProxyType({
    "mnist": Architecture(1, 28, (32, 64), 4096),  # Table 7
    "cifar10": Architecture(3, 32, (32, 64, 128), 2048),  # Table 8
    "celeba": Architecture(3, 64, (32, 64, 128, 256), 4096),  # Table 9
    "stl10": Architecture(3, 64, (32, 64, 128, 256), 4096),  # Table 9
})

_WIDTH_SCALE: contextvars.ContextVar[float] = contextvars.ContextVar("width_scale", default=1.0)


@contextlib.contextmanager
def scaled_architectures(scale: float) -> Iterator[None]:
    """:func:`architecture`'s widths times ``scale`` in the block. ValueError: not in (0, 1]."""
    if not 0 < scale <= 1:
        raise ValueError(f"scale must be in (0, 1], got {scale!r}")
    token = _WIDTH_SCALE.set(float(scale))
    try:
        yield
    finally:
        _WIDTH_SCALE.reset(token)


def architecture(dataset: str) -> Architecture:
    """Tables 7-9's shape of a dataset, scaled (widths >= 4, hidden >= 16). ValueError: unknown."""
    if dataset not in ARCHITECTURES:
        raise ValueError(f"unknown dataset {dataset!r}; choose one of {list(ARCHITECTURES)}")
    arch, scale = ARCHITECTURES[dataset], _WIDTH_SCALE.get()
    if scale == 1:
        return arch
    return dataclasses.replace(arch, widths=tuple(max(4, round(w * scale)) for w in arch.widths),
                               hidden=max(16, round(arch.hidden * scale)))


def _act(inplace: bool = False) -> nn.LeakyReLU:
    return nn.LeakyReLU(NEGATIVE_SLOPE, inplace=inplace)


def _layer(m: nn.Module, batchnorm: bool) -> list[nn.Module]:
    if not batchnorm:
        return [m, _act()]
    return [m, nn.BatchNorm1d(m.out_features) if isinstance(m, nn.Linear)
            else nn.BatchNorm2d(m.out_channels), _act()]


def conv_trunk(arch: Architecture, batchnorm: bool = False) -> nn.Sequential:
    """Tables 7-10's convolutions and Linear(hidden): (B, C, H, W) -> (B, hidden)."""
    layers: list[nn.Module] = []
    for c, w in zip((arch.channels, *arch.widths), arch.widths):
        layers += [nn.Conv2d(c, w, 3, 1, 1), _act(), nn.Conv2d(w, w, 3, 2, 1), _act()]
        layers += [nn.BatchNorm2d(w)] if batchnorm else []
    layers += [nn.Flatten(), nn.Linear(arch.flat_dim, arch.hidden), _act()]
    return nn.Sequential(*layers)


class Encoder(nn.Module):
    """Tables 7-9's encoder, heads Linear(hidden, width): (B, C, H, W) -> {name: (B, width)}."""

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


#: E(r)'s read-out: a head, "mu+sigma" (mu + exp(logvar / 2)), several (concatenated) or None.
Head = Union[str, Sequence[str], None]


def head_items(head: Head) -> tuple:
    return () if head is None else (head,) if isinstance(head, str) else tuple(head)


def head_names(head: Head) -> list:
    return [n for i in head_items(head) for n in (("mu", "logvar") if i == "mu+sigma" else (i,))]


def bounded_logvar(logvar: torch.Tensor) -> torch.Tensor:
    """``logvar`` (any shape) clamped in value to [LOGVAR_MIN, LOGVAR_MAX], gradient unclamped."""
    return logvar + (logvar.clamp(LOGVAR_MIN, LOGVAR_MAX) - logvar).detach()


def read_out(out: dict, head: Head) -> torch.Tensor:
    """``head`` off an encoder's outputs {name: (B, width)}: (B, total width). KeyError: no head."""
    for name in head_names(head):
        if name not in out:
            raise KeyError(f"encoder has no head {name!r}; its heads are {list(out)}")
    # sigma = exp(logvar / 2), the log-variance bounded
    parts = [out["mu"] + (0.5 * bounded_logvar(out["logvar"])).exp() if i == "mu+sigma"
             else out[i] for i in head_items(head)]
    return parts[0] if len(parts) == 1 else torch.cat(parts, 1)


def make_encoder(dataset: str, heads: Mapping[str, int]) -> Encoder:
    """The encoder of ``dataset`` (Tables 7-9), orthogonally initialised (Section 4)."""
    return init_orthogonal_(Encoder(architecture(dataset), heads))


class Discriminator(nn.Module):
    """Table 10, no sigmoid (least squares GAN): (B, C, H, W) -> (B,)."""

    def __init__(self, arch: Architecture):
        super().__init__()
        self.trunk = conv_trunk(arch, batchnorm=True)
        self.out = nn.Linear(arch.hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.trunk(x)).squeeze(1)


class DCGANDiscriminator(nn.Module):
    """DCGAN's discriminator (docs/baselines.md): (B, C, H, W) -> (B,)."""

    def __init__(self, arch: Architecture):
        super().__init__()
        widths = [64 * 2 ** i for i in range(len(arch.widths))]
        layers: list[nn.Module] = []
        for i, (c, w) in enumerate(zip((arch.channels, *widths), widths)):
            layers += [nn.Conv2d(c, w, 4, 2, 1), *([nn.BatchNorm2d(w)] if i else []),
                       nn.LeakyReLU(0.2)]
        self.trunk = nn.Sequential(*layers, nn.Flatten())
        self.out = nn.Linear(widths[-1] * (arch.size // 2 ** len(widths)) ** 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.trunk(x)).squeeze(1)


class FAGenerator(nn.Module):
    """Table 11, r -> G(r): (B, C, H, W) -> (B, C, H, W), padding 3 keeping the size."""

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
    """Table 12 (docs/method.md): (B, Z) -> (B, C, H, W); ``batchnorm``: after every layer."""

    def __init__(self, arch: Architecture, latent_dim: int, batchnorm: bool = False):
        super().__init__()
        self.fc = nn.Sequential(*_layer(nn.Linear(latent_dim, 4096), batchnorm))
        spec = [(256, 2), (128, 1), (128, 2), (64, 1), (64, 2), (32, 1), (32, 2)]
        layers, c = [], 256
        for i, (w, stride) in enumerate(spec if arch.size == 64 else spec[:-2]):
            out_pad = int(stride == 2 and not (i == 0 and arch.size == 28))
            layers += _layer(nn.ConvTranspose2d(c, w, 3, stride, 1, output_padding=out_pad),
                             batchnorm)
            c = w
        self.net = nn.Sequential(*layers, nn.Conv2d(c, arch.channels, 3, 1, 1), nn.Sigmoid())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(self.fc(z).view(-1, 256, 4, 4))


class MirroredDecoder(nn.Module):
    """Tables 7-9's encoder mirrored (as Tables 3-5's sizes imply): (B, Z) -> (B, C, H, W)."""

    def __init__(self, arch: Architecture, latent_dim: int, batchnorm: bool = False):
        super().__init__()
        sizes = [math.ceil(arch.size / 2 ** k) for k in range(len(arch.widths), -1, -1)]
        layers = [*_layer(nn.Linear(latent_dim, arch.hidden), batchnorm),
                  *_layer(nn.Linear(arch.hidden, arch.flat_dim), batchnorm),
                  nn.Unflatten(1, (arch.widths[-1], sizes[0], sizes[0]))]
        widths = arch.widths[::-1]
        for i, w in enumerate(widths):
            out_pad = sizes[i + 1] - (2 * sizes[i] - 1)
            layers += _layer(nn.ConvTranspose2d(w, w, 3, 2, 1, output_padding=out_pad), batchnorm)
            if i + 1 < len(widths):
                layers += _layer(nn.Conv2d(w, widths[i + 1], 3, 1, 1), batchnorm)
        self.net = nn.Sequential(*layers, nn.Conv2d(widths[-1], arch.channels, 3, 1, 1),
                                 nn.Sigmoid())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


def init_orthogonal_(module: nn.Module, zero_bias: bool = False) -> nn.Module:
    """Section 4's orthogonal Conv/Linear weights, biases zeroed if ``zero_bias``. Returns it."""
    for m in module.modules():
        if isinstance(m, _WEIGHTED):
            nn.init.orthogonal_(m.weight)
            if zero_bias and m.bias is not None:
                nn.init.zeros_(m.bias)
    return module


def init_he_(module: nn.Module) -> nn.Module:
    """The baselines' He init (docs/baselines.md), zero biases. Returns ``module``."""
    for m in module.modules():
        if isinstance(m, _WEIGHTED):
            mode = "fan_out" if isinstance(m, nn.ConvTranspose2d) else "fan_in"
            nn.init.kaiming_normal_(m.weight, a=NEGATIVE_SLOPE, mode=mode,
                                    nonlinearity="leaky_relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return module


def clamp_weights_(module: nn.Module, bound: float = math.sqrt(2.0)) -> None:
    """Eq. 9 in place on the Conv/Linear weights, not the biases (docs/choices.md section 13)."""
    weights = [m.weight for m in module.modules() if isinstance(m, _WEIGHTED)]
    with torch.no_grad():
        # Eq. 9: theta <- clamp(theta, -bound, bound)
        if weights and weights[0].device.type == "cuda":
            torch._foreach_clamp_min_(weights, -bound)
            torch._foreach_clamp_max_(weights, bound)
        else:
            for w in weights:
                w.clamp_(-bound, bound)


def to_device(module: nn.Module, device: torch.device | str) -> nn.Module:
    """``module`` on ``device``, channels_last on a CPU (docs/choices.md section 14)."""
    cpu = torch.device(device).type == "cpu"
    return module.to(device, memory_format=torch.channels_last if cpu else torch.preserve_format)


def count_parameters(module: nn.Module) -> int:
    """The number of trainable parameters (Tables 3-6)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
