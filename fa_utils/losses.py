"""Aliases for the baselines: the losses live with the method that explains them."""
from .models import LOGVAR_MAX, LOGVAR_MIN, bounded_logvar  # noqa: F401
from .vfa import (kl_normal, lsgan_discriminator_loss, lsgan_generator_loss,  # noqa: F401
                  perceptual_moments_loss, reparameterise)
