"""The paper's numbers as OCR'd (our readings: docs/method.md sections 7-8); the claims checked."""

from types import MappingProxyType as _ro  # read-only
from typing import Mapping, NamedTuple

FID_IMAGES = 10_000  # Section 5: real and generated images per FID of Table 2

#: Tables 3-6 (docs/method.md section 7): (table, size unit, time unit, {model: (size, time)}).
SIZES_AND_TIMES: Mapping[str, tuple[int, float, float, Mapping[str, tuple[float, float]]]] = _ro({
    "mnist": (3, 1e6, 1e-4, _ro({"VAE": (27.40, 9.44), "GAN": (13.44, 5.73),
                                 "VFA": (14.0, 11.66), "VFA-GAN": (14.16, 20.59)})),
    "celeba": (4, 1e6, 1e-4, _ro({"VAE": (37.48, 19.41), "GAN": (18.48, 12.45),
                                  "VFA": (19.04, 22.79), "VFA-GAN": (19.24, 41.71)})),
    "cifar10": (5, 1e5, 1e-4, _ro({"VAE": (97.55, 10.01), "GAN": (47.48, 7.20),
                                   "VFA": (50.28, 11.25), "VFA-GAN": (51.95, 21.56)})),
    "stl10": (6, 1e5, 1e-2, _ro({"VAE": (254.22, 1.51), "GAN": (32.74, 1.50),
                                 "VFA": (221.48, 1.72), "VFA-GAN": (229.90, 2.18)})),
})
SAMPLING_DEVICE = "RTX 2070"  # the GPU of Tables 3-6's times

#: The networks Tables 3-6's sizes imply (notebook 04 says why); decoder: the VAE's and the GAN's.
PaperArchitecture = NamedTuple("PaperArchitecture", [
    ("latent_dim", int), ("num_classes", int), ("decoder", str), ("gen_kernel", int)])
IMPLIED_ARCHITECTURES: Mapping[str, PaperArchitecture] = _ro({
    "mnist": PaperArchitecture(128, 10, "mirrored", 3),
    "celeba": PaperArchitecture(128, 0, "mirrored", 3),
    "cifar10": PaperArchitecture(128, 10, "mirrored", 3),
    "stl10": PaperArchitecture(512, 0, "table12", 7),
})

Expected = NamedTuple("Expected", [("id", str), ("section", str), ("text", str)])

#: notebook stem -> the claims it writes, in order (one missing from a run: "not measured").
CATALOGUE: Mapping[str, tuple[Expected, ...]] = _ro({
    "01_toy_sin": (
        Expected("fig2.fa_error_much_lower", "3.2, Figure 2",
                 "With FA the input is recovered far better than by inverting the plain network"),
        Expected("fig2.fa_whole_domain", "3.2, Figure 2",
                 "With FA x is recovered on the entire domain"),
        Expected("fig2.plain_partial", "3.2, Figure 2", "Without FA x is recovered only partially"),
        Expected("fig2.every_branch", "3.2, Figure 2",
                 "FA's advantage holds on every monotone branch")),
    "02_fa_mnist": (
        Expected("fig1.fa_reconstructs", "3.1, Figure 1", "FA recovers held-out images from the "
                 "encoder's output alone (well below the mean-image error)"),
        Expected("fig6a.latent_groups_digits", "5, Figure 6a",
                 "A 2-neuron FA latent groups the digits by class")),
    "03_vfa": (
        Expected("fig3.vfa_reconstructs", "3.3, Figure 3",
                 "VFA reconstructs held-out images better than the mean image"),
        Expected("fig8.onehot_emphasis", "3.4, Figure 8",
                 "A larger one-hot value makes the conditional samples show the wanted class")),
    "04_vfa_gan": (
        Expected("table2.vae_below_vfa", "5, Table 2", "VAE samples score a lower FID than VFA's"),
        Expected("table2.gan_below_vfa", "5, Table 2", "GAN samples score a lower FID than VFA's"),
        Expected("table2.vfagan_below_vfa", "5, Table 2",
                 "The generator lowers VFA's FID (VFA-GAN below VFA)"),
        Expected("fig15.ae_lowest", "5, Figure 15",
                 "Autoencoders have the lowest reconstruction loss"),
        Expected("fig15.r_comparable_vae", "5, Figure 15",
                 "r's reconstruction error is comparable to the VAE's"),
        Expected("fig15.gr_comparable_gan", "5, Figure 15",
                 "G(r)'s reconstruction error is comparable to the GAN's"),
        Expected("tables3-5.vfa_half_vae", "5, Tables 3-5",
                 "VFA has half the parameters of the VAE"),
        Expected("tables3-6.vfa_same_time", "5, Tables 3-6",
                 "VFA takes about the same time as the VAE to draw a sample")),
    "05_local_fa": (
        Expected("fig16.local_reconstructs", "3.5, Figure 16",
                 "Local training can reconstruct images (well below the mean-image error)"),
        Expected("3.5.local_less_memory", "3.5",
                 "Local FA saves less memory for backward than global FA")),
    "06_appendix_convergence": (
        Expected("a71.closed_form", "Appendix 7.1, Eq. 13-18",
                 "The one-weight inner step has the closed form of Eq. 18"),
        Expected("a71.converges_iff", "Appendix 7.1, Eq. 19",
                 "The inner iteration converges exactly when 0 < w^2 < 2"),
        Expected("a71.rate", "Appendix 7.1, Eq. 18",
                 "The distance to the limit shrinks as |1 - w^2|^p"),
        Expected("a72.square_pinv", "Appendix 7.2, Eq. 22",
                 "FA drives a square layer's W^T to pinv(W)"),
        Expected("a72.fewer_outputs_projector", "Appendix 7.2, Eq. 22",
                 "With fewer outputs W^T W reaches the row-space projector"),
        Expected("eq9.clamp_prevents_divergence", "3.1, Eq. 9 (Appendix 7.1)",
                 "The sqrt 2 clamp keeps training from diverging"),
        Expected("eq9.trained_weights_converge", "3.1, Eq. 9 (Appendix 7.1)",
                 "With the clamp the trained weights make the inner iteration converge")),
})

#: REPORT.md's group titles, by the part of a claim's section before the comma.
SECTION_TITLES: Mapping[str, str] = _ro({
    "3.1": "Section 3.1: feature alignment", "3.2": "Section 3.2: the toy example",
    "3.3": "Section 3.3: variational feature alignment",
    "3.4": "Section 3.4: conditional VFA and VFA-GAN",
    "3.5": "Section 3.5: local feature alignment", "5": "Section 5: experiments and comparisons",
    "Appendix 7.1": "Appendix A, 7.1: one weight",
    "Appendix 7.2": "Appendix A, 7.2: a linear layer"})
