"""SCDL_MT with one part of SCDL switched off, for the ablation of docs/scdl.md ("Which part of SCDL ...").

Not part of the package: point ``nnUNet_extTrainer`` (or ``nnUNetv2_scdl_benchmark --ext-trainer-dir``) at this
folder. Each class changes one class attribute or network option of ``nnUNetTrainerSCDL_MT`` (the paper variant):

- ``nnUNetTrainerSCDL_MT_noPriors``: the priors stay out of the decoder (``prior_mode "none"``); CDBA and SAC train
  the proxies as usual, so only the losses act on the U-Net.
- ``nnUNetTrainerSCDL_MT_noLosses``: the priors go into the decoder, but CDBA and SAC have weight 0; the proxies
  and the prior projections learn only through the segmentation losses.
- ``nnUNetTrainerSCDL_MT_encoderTokens``: tokens from the stride-8 encoder stage (``scdl_token_source "encoder"``)
  instead of the last decoder stage pooled to the same grid; everything else as SCDL_MT.
- ``nnUNetTrainerSCDL_MT_tokensDetached``: CDBA's gradient stops at the token features (``cdba_grad_to_tokens``
  False), so CDBA trains the projection MLP and the proxies but not the U-Net.
- ``nnUNetTrainerSCDL_MT_proxiesDetachedInPriors``: the priors read detached proxies (``prior_grad_to_proxies``
  False), so the segmentation loss does not move μ and ρ; only CDBA and SAC do.
- ``nnUNetTrainerSCDL_MT_softPriors``: the priors weight the classes at τ_prior = 1 (``scdl_prior_temperature``) instead
  of the losses' 0.2, so r^dist and r^center spread their weight over the classes instead of saturating on one.
"""
from nnunetv2_scdl.training.scdl_mean_teacher import nnUNetTrainerSCDL_MT


class nnUNetTrainerSCDL_MT_noPriors(nnUNetTrainerSCDL_MT):
    scdl_prior_modes = {"paper": "none", "released": "none"}


class nnUNetTrainerSCDL_MT_noLosses(nnUNetTrainerSCDL_MT):
    scdl_weight_cdba = 0.0
    scdl_weight_sac = 0.0


class nnUNetTrainerSCDL_MT_encoderTokens(nnUNetTrainerSCDL_MT):
    scdl_token_source = "encoder"


class nnUNetTrainerSCDL_MT_tokensDetached(nnUNetTrainerSCDL_MT):
    @classmethod
    def scdl_network_options(cls) -> dict:
        return {**super().scdl_network_options(), "cdba_grad_to_tokens": False}


class nnUNetTrainerSCDL_MT_proxiesDetachedInPriors(nnUNetTrainerSCDL_MT):
    @classmethod
    def scdl_network_options(cls) -> dict:
        return {**super().scdl_network_options(), "prior_grad_to_proxies": False}


class nnUNetTrainerSCDL_MT_softPriors(nnUNetTrainerSCDL_MT):
    scdl_prior_temperature = 1.0
