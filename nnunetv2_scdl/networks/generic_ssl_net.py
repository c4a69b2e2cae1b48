"""GenericSSL's "aggregating & decoupling" network on nnU-Net building blocks (docs/generic_ssl.md).

One shared encoder E (a ``PlainConvEncoder`` whose stages add a projected time embedding when one is given), two stems
and three ``UNetDecoder`` heads:

    image path      x ──stem_image──▶ E(·, None) ──▶ D_θ (``decoder``, inference) and D_ψ (``decoder_psi``)
    diffusion path  [x ⊕ x_t] ──stem_diffusion──▶ E(·, τ(t)) ──▶ D_ξ (``decoder_xi``, time-conditioned, x₀ logits)

``forward(x)`` is the D_θ path only, so nnU-Net's predictor sees a plain segmentation network; nnU-Net's
``set_deep_supervision_enabled`` toggles ``network.decoder.deep_supervision`` (= D_θ); ``set_deep_supervision`` toggles
all three. ``aggregate_decoders`` implements θ ← m·θ + (1 − m)·(ξ + ψ)/2.

Note: like nnU-Net's ``PlainConvUNet``, every ``UNetDecoder`` keeps a reference to the encoder, so the state dict lists
the shared encoder under each decoder too (``decoder.encoder.*`` …); strict loading works as usual.
"""
from __future__ import annotations

import pydoc
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Type, Union

import torch
from dynamic_network_architectures.building_blocks.plain_conv_encoder import PlainConvEncoder
from dynamic_network_architectures.building_blocks.simple_conv_blocks import StackedConvBlocks
from dynamic_network_architectures.building_blocks.unet_decoder import UNetDecoder
from dynamic_network_architectures.initialization.weight_init import InitWeights_He
from torch import nn
from torch.nn.modules.conv import _ConvNd
from torch.nn.modules.dropout import _DropoutNd

from nnunetv2_scdl.networks.diffusion import TimeEmbedding
from nnunetv2_scdl.networks.training_pass import accepts_training_pass

__all__ = ["TimeConditionedEncoder", "TimeConditionedUNetDecoder", "GenericSSLNet", "aggregate_parameters",
           "build_generic_ssl_network"]

_PLAIN_CONV_UNET = "dynamic_network_architectures.architectures.unet.PlainConvUNet"

IntOrSeq = Union[int, List[int], Tuple[int, ...]]


def _add_time(x: torch.Tensor, proj: nn.Linear, temb: torch.Tensor) -> torch.Tensor:
    """x [B, C, *spatial] + Linear(τ) [B, C] broadcast over space."""
    shift = proj(temb).to(x.dtype)
    return x + shift.reshape(*shift.shape, *([1] * (x.dim() - 2)))


class TimeConditionedEncoder(PlainConvEncoder):
    """``PlainConvEncoder`` whose stage s output gets + W_s τ(t) (a per-stage Linear of the time embedding).

    ``forward(x, temb=None)`` always returns the list of stage outputs (skips, bottleneck last); with ``temb=None`` it
    is exactly the plain encoder (the image-only path).
    """

    def __init__(self, *args, time_dim: int, **kwargs):
        kwargs["return_skips"] = True
        super().__init__(*args, **kwargs)
        self.time_proj = nn.ModuleList([nn.Linear(time_dim, c) for c in self.output_channels])

    def forward(self, x: torch.Tensor, temb: Optional[torch.Tensor] = None) -> List[torch.Tensor]:
        skips = []
        for stage, proj in zip(self.stages, self.time_proj):
            x = stage(x)
            if temb is not None:
                x = _add_time(x, proj, temb)
            skips.append(x)
        return skips


class TimeConditionedUNetDecoder(UNetDecoder):
    """``UNetDecoder`` (D_ξ) that adds W_s τ(t) to each up-sampled feature before it is concatenated with the skip.

    Same submodule names as ``UNetDecoder`` plus ``time_proj``, so aggregation by name skips the time layers.
    Output follows ``deep_supervision`` like ``UNetDecoder`` (list highest-resolution first, or one tensor).
    """

    def __init__(self, encoder: PlainConvEncoder, num_classes: int, n_conv_per_stage: IntOrSeq, deep_supervision: bool,
                 time_dim: int, **kwargs):
        super().__init__(encoder, num_classes, n_conv_per_stage, deep_supervision, **kwargs)
        # stage s up-samples to the resolution (and channel count) of skip -(s+2)
        self.time_proj = nn.ModuleList([nn.Linear(time_dim, encoder.output_channels[-(s + 2)])
                                        for s in range(len(self.stages))])

    def forward(self, skips: Sequence[torch.Tensor], temb: Optional[torch.Tensor] = None):
        x = skips[-1]
        outputs = []
        last = len(self.stages) - 1
        for s in range(len(self.stages)):
            up = self.transpconvs[s](x)
            if temb is not None:
                up = _add_time(up, self.time_proj[s], temb)
            x = self.stages[s](torch.cat((up, skips[-(s + 2)]), dim=1))
            if self.deep_supervision or s == last:
                outputs.append(self.seg_layers[s](x))
        outputs = outputs[::-1]  # highest resolution first, as nnU-Net expects
        return outputs if self.deep_supervision else outputs[0]


@torch.no_grad()
def aggregate_parameters(target: nn.Module, sources: Sequence[nn.Module], momentum: float = 0.99) -> List[str]:
    """θ ← m·θ + (1 − m)·mean(sources), in place, for every parameter of ``target`` whose name exists with the same
    shape in every source (GenericSSL "aggregating": sources = (D_ξ, D_ψ), m = 0.99).

    Skipped: names missing (or of another shape) in any source, e.g. D_ξ's ``time_proj``; and parameters that are the
    very same tensor in target and a source (the shared encoder each ``UNetDecoder`` references), which must not be
    averaged with itself. Buffers (e.g. BatchNorm running statistics) are not touched.

    Returns:
        the names that were updated, in ``target.named_parameters()`` order.
    """
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"momentum must lie in [0, 1], got {momentum}.")
    if len(sources) == 0:
        raise ValueError("aggregate_parameters needs at least one source module.")
    source_params: List[Dict[str, torch.Tensor]] = [dict(src.named_parameters()) for src in sources]
    updated = []
    for name, theta in target.named_parameters():
        matches = [p.get(name) for p in source_params]
        if any(q is None or q.shape != theta.shape for q in matches):
            continue
        if any(q is theta for q in matches):
            continue
        mean = torch.stack([q.detach().to(theta.dtype) for q in matches]).mean(0)
        theta.mul_(momentum).add_(mean, alpha=1.0 - momentum)
        updated.append(name)
    return updated


class GenericSSLNet(nn.Module):
    """Shared time-conditioned encoder, two stems and the three GenericSSL decoders (D_ξ, D_ψ, D_θ).

    The constructor mirrors ``PlainConvUNet``'s arguments (so a trainer can pass the plans' ``arch_kwargs``), plus:
        time_embed_dim: sinusoid size (128); time_hidden_dim: MLP width = per-stage projection input (512).

    Stems: a single conv block (conv → norm → nonlin, ``kernel_sizes[0]``) to ``features_per_stage[0]`` channels; the
    image stem takes ``input_channels``, the diffusion stem ``input_channels + num_classes`` (image ⊕ x_t).
    Initialisation: nnU-Net's ``InitWeights_He(1e-2)`` on all convolutions; linear layers keep PyTorch's default.

    Shapes (input patch P, C classes): ``forward``/``forward_theta``/``forward_psi``: x [B, C_in, *P] → logits
    [B, C, *P] (a list over DS scales when that decoder's ``deep_supervision`` is True). ``forward_xi``: x_t [B, C, *P],
    t [B] long, image [B, C_in, *P] → x₀ logits of the same layout.
    """

    def __init__(self, input_channels: int, n_stages: int, features_per_stage: IntOrSeq, conv_op: Type[_ConvNd],
                 kernel_sizes: IntOrSeq, strides: IntOrSeq, n_conv_per_stage: IntOrSeq, num_classes: int,
                 n_conv_per_stage_decoder: IntOrSeq, conv_bias: bool = False, norm_op: Optional[Type[nn.Module]] = None,
                 norm_op_kwargs: Optional[dict] = None, dropout_op: Optional[Type[_DropoutNd]] = None,
                 dropout_op_kwargs: Optional[dict] = None, nonlin: Optional[Type[nn.Module]] = None,
                 nonlin_kwargs: Optional[dict] = None, deep_supervision: bool = False, nonlin_first: bool = False,
                 time_embed_dim: int = 128, time_hidden_dim: int = 512):
        super().__init__()
        if input_channels < 1 or num_classes < 1:
            raise ValueError(f"input_channels and num_classes must be >= 1, got {input_channels}, {num_classes}.")
        if isinstance(features_per_stage, int):
            features_per_stage = [features_per_stage] * n_stages
        if isinstance(kernel_sizes, int):
            kernel_sizes = [kernel_sizes] * n_stages
        if len(features_per_stage) != n_stages or len(kernel_sizes) != n_stages:
            raise ValueError(f"features_per_stage and kernel_sizes need {n_stages} entries, got "
                             f"{len(features_per_stage)} and {len(kernel_sizes)}.")
        self.input_channels, self.num_classes = input_channels, num_classes
        block = dict(conv_bias=conv_bias, norm_op=norm_op, norm_op_kwargs=norm_op_kwargs, dropout_op=dropout_op,
                     dropout_op_kwargs=dropout_op_kwargs, nonlin=nonlin, nonlin_kwargs=nonlin_kwargs)
        f0 = features_per_stage[0]

        def stem(in_channels: int) -> StackedConvBlocks:
            return StackedConvBlocks(1, conv_op, in_channels, f0, kernel_sizes[0], 1, conv_bias, norm_op,
                                     norm_op_kwargs, dropout_op, dropout_op_kwargs, nonlin, nonlin_kwargs, nonlin_first)

        self.stem_image = stem(input_channels)
        self.stem_diffusion = stem(input_channels + num_classes)
        self.time_embedding = TimeEmbedding(time_embed_dim, time_hidden_dim)
        self.encoder = TimeConditionedEncoder(f0, n_stages, features_per_stage, conv_op, kernel_sizes, strides,
                                              n_conv_per_stage, nonlin_first=nonlin_first, time_dim=time_hidden_dim,
                                              **block)
        dec = dict(nonlin_first=nonlin_first, **block)
        # D_θ is ``decoder`` so nnU-Net's deep-supervision toggle and predictor find the inference head.
        self.decoder = UNetDecoder(self.encoder, num_classes, n_conv_per_stage_decoder, deep_supervision, **dec)
        self.decoder_psi = UNetDecoder(self.encoder, num_classes, n_conv_per_stage_decoder, deep_supervision, **dec)
        self.decoder_xi = TimeConditionedUNetDecoder(self.encoder, num_classes, n_conv_per_stage_decoder,
                                                     deep_supervision, time_dim=time_hidden_dim, **dec)
        self.apply(self.initialize)
        # GenericSSL trains D_θ at full resolution only: its lower-resolution heads never get a gradient (DDP
        # requires one for every trainable parameter); they stay in the state dict for nnU-Net's DS toggle
        for head in self.decoder.seg_layers[:-1]:
            head.requires_grad_(False)

    @staticmethod
    def initialize(module: nn.Module) -> None:
        """nnU-Net's PlainConvUNet init (He, neg. slope 1e-2, on convs); ``get_network_from_plans`` applies it too."""
        InitWeights_He(1e-2)(module)

    # --- paths -------------------------------------------------------------------------------------------------------
    def _check_image(self, x: torch.Tensor) -> None:
        if x.dim() < 3 or x.shape[1] != self.input_channels:
            raise ValueError(f"Expected an image [B, {self.input_channels}, *spatial], got shape {tuple(x.shape)}.")

    def encode_image(self, x: torch.Tensor) -> List[torch.Tensor]:
        """E(stem_image(x)) without time embedding → skips (bottleneck last)."""
        self._check_image(x)
        return self.encoder(self.stem_image(x), None)

    @accepts_training_pass
    def forward(self, x: torch.Tensor):
        """Inference path D_θ(E(stem_image(x))) (what nnUNetv2_predict runs)."""
        return self.decoder(self.encode_image(x))

    def forward_theta(self, x: torch.Tensor):
        """D_θ on the image path (same as ``forward``)."""
        return self.forward(x)

    def forward_psi(self, x: torch.Tensor):
        """D_ψ, the difficulty-aware supervised decoder, on the image path."""
        return self.decoder_psi(self.encode_image(x))

    def forward_theta_psi(self, x: torch.Tensor):
        """(D_θ, D_ψ) outputs from one shared encoder pass (saves an encoder forward on unlabeled images)."""
        skips = self.encode_image(x)
        return self.decoder(skips), self.decoder_psi(skips)

    def forward_xi(self, x_t: torch.Tensor, t: torch.Tensor, image: torch.Tensor):
        """D_ξ(E(stem_diffusion(image ⊕ x_t), τ(t)), τ(t)): x₀ logits for noisy labels x_t at timesteps t [B]."""
        self._check_image(image)
        if x_t.shape[0] != image.shape[0] or x_t.shape[1] != self.num_classes or x_t.shape[2:] != image.shape[2:]:
            raise ValueError(f"x_t must be [B, {self.num_classes}, *spatial] matching the image {tuple(image.shape)}, "
                             f"got {tuple(x_t.shape)}.")
        t = torch.as_tensor(t, device=image.device)
        if t.dim() != 1 or t.shape[0] != image.shape[0]:
            raise ValueError(f"t must be [B] with B = {image.shape[0]}, got shape {tuple(t.shape)}.")
        temb = self.time_embedding(t)
        skips = self.encoder(self.stem_diffusion(torch.cat((image, x_t.to(image.dtype)), dim=1)), temb)
        return self.decoder_xi(skips, temb)

    def denoiser(self, image: torch.Tensor) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """``(x_t, t) -> full-resolution x₀ logits`` conditioned on ``image``, for ``diffusion.ddim_sample``."""
        def model(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            out = self.forward_xi(x_t, t, image)
            return out[0] if isinstance(out, (list, tuple)) else out
        return model

    # --- nnU-Net / GenericSSL helpers ---------------------------------------------------------------------------------
    def set_deep_supervision(self, enabled: bool) -> None:
        """Toggle deep supervision on all three decoders (nnU-Net itself only touches ``decoder`` = D_θ)."""
        for d in (self.decoder, self.decoder_psi, self.decoder_xi):
            d.deep_supervision = enabled

    def aggregate_decoders(self, momentum: float = 0.99) -> List[str]:
        """GenericSSL aggregating step: θ ← m·θ + (1 − m)·(ξ + ψ)/2 over name- and shape-matched decoder parameters
        (D_ξ's time projections and the shared encoder are excluded). Returns the updated names."""
        return aggregate_parameters(self.decoder, (self.decoder_xi, self.decoder_psi), momentum)


def build_generic_ssl_network(configuration_manager, num_input_channels: int, num_output_channels: int,
                              enable_deep_supervision: bool = True, network_class=GenericSSLNet,
                              **options) -> GenericSSLNet:
    """A ``network_class`` (:class:`GenericSSLNet` or a subclass; ``options`` are its extra keyword arguments) from
    the plans' ``PlainConvUNet`` arguments (He init, like the plans' U-Net)."""
    if configuration_manager.network_arch_class_name != _PLAIN_CONV_UNET:
        raise NotImplementedError(f"GenericSSL needs PlainConvUNet plans (nnUNetPlans); this configuration uses "
                                  f"{configuration_manager.network_arch_class_name}.")
    kwargs = dict(configuration_manager.network_arch_init_kwargs)
    for name in configuration_manager.network_arch_init_kwargs_req_import:
        if kwargs[name] is not None:
            kwargs[name] = pydoc.locate(kwargs[name])
    kwargs["deep_supervision"] = enable_deep_supervision
    return network_class(input_channels=num_input_channels, num_classes=num_output_channels, **kwargs, **options)
