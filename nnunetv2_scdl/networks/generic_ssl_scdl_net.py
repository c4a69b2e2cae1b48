"""GenericSSL's network with SCDL on the D_θ path: tokens from D_θ's last decoder feature, the prior
injected at D_θ's full-resolution head. The same SCDL also reads D_ψ's last decoder feature (losses only), so that
labeled tokens come from the decoder that learns from labels. Trainer: ``nnUNetTrainerSCDL_GenericSSL``; user
documentation: docs/generic_ssl.md.
"""
from typing import Optional

import torch
from torch import nn

from nnunetv2_scdl.networks.generic_ssl_net import GenericSSLNet
from nnunetv2_scdl.networks.scdl_unet import SCDLUNet
from nnunetv2_scdl.networks.training_pass import accepts_training_pass

__all__ = ["GenericSSLSCDLNet"]


class _ImageEncoder(nn.Module):
    """The image path's encoder as one module, x → E(stem_image(x), None) (skips), with the ``strides`` and
    ``output_channels`` that ``SCDLUNet`` reads. It only references the stem and encoder of a ``GenericSSLNet``."""

    def __init__(self, stem: nn.Module, encoder: nn.Module):
        super().__init__()
        self.stem, self.encoder = stem, encoder
        self.strides, self.output_channels = encoder.strides, encoder.output_channels

    def forward(self, x: torch.Tensor):
        return self.encoder(self.stem(x), None)

    def compute_conv_feature_map_size(self, input_size):
        return self.encoder.compute_conv_feature_map_size(input_size)


class _DecoderPath(nn.Module):
    """What ``SCDLUNet`` wraps: ``.encoder`` = the image encoder, ``.decoder`` = D_θ or D_ψ (the very same
    modules)."""

    def __init__(self, encoder: nn.Module, decoder: nn.Module):
        super().__init__()
        self.encoder, self.decoder = encoder, decoder


class GenericSSLSCDLNet(GenericSSLNet):
    """``GenericSSLNet`` whose D_θ path (inference) carries SCDL: tokens from D_θ's last decoder feature, priors
    injected at D_θ's full-resolution head (``prior_mode="head"``).

    The SCDL machinery is an ``SCDLUNet`` around the image encoder and D_θ (shared modules, not copies), and a
    second one around the image encoder and D_ψ that shares its ``scdl`` and injects nothing (``prior_mode="none"``).
    Only ``scdl`` is registered here, so the state dict is GenericSSLNet's plus ``scdl.*``.
    ``forward(x)`` = D_θ with the prior; ``forward_theta(x, return_scdl=True)`` and
    ``forward_psi(x, return_scdl=True)`` → ``(outputs, SCDLAux)``; ``concatenate_aux`` joins the two for one
    ``scdl_loss_terms`` call.
    """

    def __init__(self, *args, patch_size, token_source: str = "decoder", prior_mode: str = "head",
                 variant: str = "paper", prior_temperature: Optional[float] = None, **kwargs):
        super().__init__(*args, **kwargs)
        image_encoder = _ImageEncoder(self.stem_image, self.encoder)
        options = dict(token_source=token_source, variant=variant, prior_temperature=prior_temperature)
        theta = SCDLUNet(_DecoderPath(image_encoder, self.decoder), self.num_classes, patch_size,
                         prior_mode=prior_mode, **options)
        psi = SCDLUNet(_DecoderPath(image_encoder, self.decoder_psi), self.num_classes, patch_size,
                       prior_mode="none", rng_stream=1, **options)
        psi.scdl = theta.scdl  # one SCDL: ψ's own (built above, unused) is dropped
        # not registered children: their modules are ours already
        object.__setattr__(self, "_theta_scdl", theta)
        object.__setattr__(self, "_psi_scdl", psi)
        self.scdl = theta.scdl

    @accepts_training_pass
    def forward(self, x: torch.Tensor):
        self._check_image(x)
        return self._theta_scdl(x)

    def forward_theta(self, x: torch.Tensor, return_scdl: bool = False):
        self._check_image(x)
        return self._theta_scdl(x, return_scdl=return_scdl)

    def forward_psi(self, x: torch.Tensor, return_scdl: bool = False):
        """D_ψ (no prior); with ``return_scdl`` also the SCDL of D_ψ's tokens (``(outputs, SCDLAux)``)."""
        self._check_image(x)
        return self._psi_scdl(x, return_scdl=True) if return_scdl else self.decoder_psi(self.encode_image(x))

    def forward_theta_psi(self, x: torch.Tensor):
        return self.forward_theta(x), self.forward_psi(x)

    def scdl_loss_terms(self, *args, **kwargs):
        """``SCDLUNet.scdl_loss_terms`` of the D_θ path."""
        return self._theta_scdl.scdl_loss_terms(*args, **kwargs)
