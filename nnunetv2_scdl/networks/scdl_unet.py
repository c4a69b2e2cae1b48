"""SCDL attached to nnU-Net's plan-generated U-Nets (``PlainConvUNet``, ``ResidualEncoderUNet``).

``SCDLUNet`` re-uses the base network's ``encoder`` and ``decoder`` modules (so their state_dict keys are exactly the
base network's) and adds one ``scdl`` submodule (all SCDL parameters live under ``scdl.``). A single encoder and a
single decoder pass is made per forward.

Where the tokens come from (``token_source``):
- ``"decoder"`` (default): F = the output of the last decoder stage (the input of the full-resolution
  segmentation head, the analogue of VNet x9), average-pooled to the token grid.
- ``"encoder"``: the encoder stage whose cumulative stride first reaches ``token_stride`` (the same grid, no pooling).
The grid has ``token_strides`` voxels per token: the cumulative strides of that encoder stage (8×8×8 for isotropic
plans, e.g. 4×8×8 for anisotropic ones, 16×16 in 2-D), so a 96³ patch gives 12³ tokens.

Where the priors go (``prior_mode``; the priors are [r^dist; r^center; r^tok], 3D channels on the token grid, mapped
by one zero-initialised, bias-free 1×1 projection per site and resized (bi/trilinear) to the site's resolution):
- ``"decoder"`` (default): every decoder stage. With encoder tokens the prior exists before decoding and is added to
  each stage's output, so it also flows into the following stages. With decoder tokens the prior exists only after
  the last stage; it is then added to each stage's output right before that stage's segmentation head (a 1×1 conv),
  which is exact and cheap when folded into the head (head(F + P·π) = head(F) + (W_head·P)·π), so every deep-
  supervision output sees it without a second decoder pass. At inference (no deep supervision) only the
  full-resolution head is computed, with its prior.
- ``"head"``: only the last (full-resolution) decoder stage: the released Synapse-MagicNet inference path.
- ``"none"``: SCDL contributes losses only; inference skips SCDL entirely (the released CPS behaviour).

Trainer API::

    net = build_scdl_network_from_plans(configuration_manager, n_in, n_out, enable_deep_supervision, **options)
    outputs, aux = net(x, return_scdl=True)           # outputs: what the base net returns (list with DS)
    terms = net.scdl_loss_terms(aux, target[0], n_labeled, ignore_label=label_manager.ignore_label)
    loss = host_loss + sum(lambdas[k] * terms[k] for k in terms)   # keys: cdba_labeled, cdba_unlabeled, sac
    net(x)                                             # what nnU-Net's predictor calls: logits only

In eval mode the forward is deterministic (no dropout, fixed proxy noise, no token noise).
"""
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from dynamic_network_architectures.building_blocks.unet_decoder import UNetDecoder
from torch import Tensor, nn

from nnunetv2_scdl.scdl.module import SCDL, SCDLOutput, concatenate_outputs
from nnunetv2_scdl.scdl.tokens import (class_one_hot, class_proportions_per_token, class_region_sums,
                                       features_to_tokens, linear_interpolation_matrix, pool_to_grid, prepare_labels,
                                       resize_linear, token_grid_shape, token_strides_from_stage_strides,
                                       tokens_to_map)

__all__ = ["SCDLUNet", "SCDLAux", "concatenate_aux", "TOKEN_SOURCES", "PRIOR_MODES", "build_scdl_unet", "build_scdl_network_from_plans",
           "independent_rng"]

TOKEN_SOURCES = ("decoder", "encoder")
PRIOR_MODES = ("decoder", "head", "none")


@contextmanager
def independent_rng(stream: int = 0) -> Iterator[None]:
    """Random draws inside come from a CPU generator of their own, seeded from ``torch.initial_seed()`` and
    ``stream``, and the global RNG state is the same afterwards as before.

    SCDL's parameters are created this way, so adding SCDL to a host changes none of the host's random draws: with
    the same seed, X and SCDL-X start from identical host weights (a paired comparison), and two SCDLs of one
    trainer (``stream`` 0 and 1) still start from different draws.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed((torch.initial_seed() + 1_000_003 * (stream + 1)) % (2 ** 63))
        yield


@dataclass
class SCDLAux:
    """What a training forward hands to ``SCDLUNet.scdl_loss_terms``."""

    scdl: SCDLOutput  # embeddings, assignments, similarities, priors of the whole batch
    token_grid: Tuple[int, ...]  # tokens per axis; L = prod(token_grid)
    token_strides: Tuple[int, ...]  # voxels per token per axis
    input_shape: Tuple[int, ...]  # spatial shape of the network input
    region_features: Tensor  # detached pre-MLP feature map for SAC rows: F [B, D_x, *input] or encoder [B, D_x, *grid]


def concatenate_aux(auxes: Sequence[SCDLAux]) -> SCDLAux:
    """Several training forwards' ``SCDLAux`` as one batch, images in the given order, for one
    ``scdl_loss_terms`` call (e.g. labeled images from one decoder, unlabeled ones from another, same SCDL)."""
    if not auxes:
        raise ValueError("concatenate_aux needs at least one SCDLAux.")
    first = auxes[0]
    for aux in auxes[1:]:
        if (aux.token_grid, aux.token_strides, aux.input_shape) != (first.token_grid, first.token_strides,
                                                                      first.input_shape):
            raise ValueError(f"cannot concatenate SCDL outputs of different token grids or inputs: "
                             f"{(aux.token_grid, aux.token_strides, aux.input_shape)} against "
                             f"{(first.token_grid, first.token_strides, first.input_shape)}.")
    return SCDLAux(concatenate_outputs([aux.scdl for aux in auxes]), first.token_grid, first.token_strides,
                   first.input_shape, torch.cat([aux.region_features for aux in auxes]))


class SCDLUNet(nn.Module):
    """A plan-generated nnU-Net U-Net with SCDL.

    Args:
        base: a ``PlainConvUNet`` or ``ResidualEncoderUNet`` (anything with ``encoder`` and a ``UNetDecoder``), e.g.
            from ``get_network_from_plans``. Its encoder and decoder modules are taken over, not copied.
        num_classes: C, the number of segmentation outputs (label classes incl. background; regions unsupported).
        patch_size: the plans' patch size; must be divisible by the token strides. Sets ``token_grid``.
        token_source: ``"decoder"`` (default) or ``"encoder"``, see the module docstring.
        token_stride: target token size along the most downsampled axis. None (default) = 8 for 3-D networks (a
            96³ patch gives 12³ tokens, as in the released code) and 16 for 2-D ones (256 pixels per token; 8×8 would
            give 64, and SCDL's cost per pixel would be 8× that of the 3-D case).
        prior_mode: ``"decoder"`` (default), ``"head"`` or ``"none"``.
        sac_include_background: whether class 0 gets a semantic anchor (default True).
        rng_stream: SCDL's parameters are drawn under ``independent_rng(rng_stream)``; give each SCDL of one model
            its own stream.
        **scdl_kwargs: forwarded to ``SCDL`` (variant="paper", embed_dim=256, num_samples=50, tau_e2p=0.2, ...).
    """

    def __init__(self, base: nn.Module, num_classes: int, patch_size: Sequence[int], token_source: str = "decoder",
                 token_stride: Optional[int] = None, prior_mode: str = "decoder", sac_include_background: bool = True,
                 rng_stream: int = 0, **scdl_kwargs):
        super().__init__()
        if not (hasattr(base, "encoder") and isinstance(getattr(base, "decoder", None), UNetDecoder)):
            raise ValueError(f"SCDLUNet needs a network with .encoder and a UNetDecoder .decoder (PlainConvUNet, "
                             f"ResidualEncoderUNet); got {type(base).__name__}.")
        if token_source not in TOKEN_SOURCES:
            raise ValueError(f"token_source must be one of {TOKEN_SOURCES}, got {token_source!r}.")
        if prior_mode not in PRIOR_MODES:
            raise ValueError(f"prior_mode must be one of {PRIOR_MODES}, got {prior_mode!r}.")
        if base.decoder.num_classes != num_classes:
            raise ValueError(f"num_classes={num_classes} but the base network has {base.decoder.num_classes} outputs.")
        self.encoder = base.encoder
        self.decoder = base.decoder
        for name in ("key_to_encoder", "key_to_stem", "keys_to_in_proj"):  # used by nnU-Net's pretraining helpers
            if hasattr(base, name):
                setattr(self, name, getattr(base, name))

        stage_strides = [list(s) for s in self.encoder.strides]
        self.spatial_dims = len(stage_strides[0])
        if len(patch_size) != self.spatial_dims:
            raise ValueError(f"patch_size {tuple(patch_size)} does not match the network's {self.spatial_dims}-D "
                             f"convolutions.")
        self.num_classes = num_classes
        self.token_source = token_source
        self.prior_mode = prior_mode
        self.sac_include_background = sac_include_background
        if token_stride is None:
            token_stride = 8 if self.spatial_dims == 3 else 16
        self.token_stage, self.token_strides = token_strides_from_stage_strides(stage_strides, token_stride)
        self.patch_size = tuple(int(p) for p in patch_size)
        self.token_grid = token_grid_shape(self.patch_size, self.token_strides)
        self.num_tokens = int(np.prod(self.token_grid))

        n_decoder_stages = len(self.decoder.stages)
        stage_channels = [self.encoder.output_channels[-(s + 2)] for s in range(n_decoder_stages)]
        if prior_mode == "decoder":
            self.prior_stages = tuple(range(n_decoder_stages))
        elif prior_mode == "head":
            self.prior_stages = (n_decoder_stages - 1,)
        else:
            self.prior_stages = ()
        token_channels = (stage_channels[-1] if token_source == "decoder"
                          else self.encoder.output_channels[self.token_stage])
        with independent_rng(rng_stream):
            self.scdl = SCDL(token_channels, num_classes,
                             prior_channels=[stage_channels[s] for s in self.prior_stages], **scdl_kwargs)
        self._interpolation_cache = {}  # (size_in, size_out, device, dtype) → matrix; not state

    # ---------------------------------------------------------------------------------------------- helpers
    def _resize(self, prior_map: Tensor, size: Sequence[int]) -> Tensor:
        """Bi-/trilinear (align_corners=False) resize of a token-grid map to a stage's resolution."""
        return resize_linear(prior_map, size, self._interpolation_cache)

    def _prior_feature(self, priors: Tensor, stage: int, grid: Sequence[int], like: Tensor) -> Tensor:
        """P_stage·π resized to ``like`` ([B, C_s, *S_s]), in like's dtype."""
        site = self.prior_stages.index(stage)
        with torch.autocast(device_type=priors.device.type, enabled=False):
            prior_map = tokens_to_map(self.scdl.prior_projections(priors, site), grid)
            prior_map = self._resize(prior_map, like.shape[2:])
        return prior_map.to(like.dtype)

    def _folded_prior_weights(self, stages: Sequence[int]) -> Tensor:
        """[len(stages)·K, 3D], fp32: W_head_s·P_s for each stage s, stacked, so one GEMM gives every head's prior
        logits. Cached between inference forwards (it depends only on weights)."""
        heads = [self.decoder.seg_layers[s].weight for s in stages]
        projections = [self.scdl.prior_projections.weight(self.prior_stages.index(s)) for s in stages]

        def compute():
            return torch.cat([h.reshape(h.shape[0], -1).float() @ p for h, p in zip(heads, projections)])

        return self.scdl.eval_cache.get(f"folded_heads{tuple(stages)}", heads + projections, compute,
                                        enabled=not self.training and not torch.is_grad_enabled())

    def _add_prior_logits(self, logits: Tensor, prior_logits: Tensor, grid: Sequence[int]) -> Tensor:
        """logits + resize(prior_logits) for one head; ``prior_logits`` [B, L, K] = π·(W_head·P_s)ᵀ on the token grid
        (head(F + P_s·π) = head(F) + (W_head·P_s)·π, bias-free).

        The resize is separable; all axes but the last are resized on the small map, and the last one is fused with
        the addition into a single GEMM over the logits (addmm), so no full-resolution prior tensor is made.
        """
        size = logits.shape[2:]
        with torch.autocast(device_type=prior_logits.device.type, enabled=False):
            prior_map = tokens_to_map(prior_logits, grid)  # [B, K, *grid]
            prior_map = resize_linear(prior_map, (*size[:-1], grid[-1]), self._interpolation_cache)
        if grid[-1] == size[-1]:
            return logits + prior_map.to(logits.dtype)
        matrix = self._interpolation_matrix(grid[-1], size[-1], logits)
        flat_logits = logits.contiguous().view(-1, size[-1])
        flat_prior = prior_map.to(logits.dtype).reshape(-1, grid[-1])
        if torch.is_grad_enabled():
            return torch.addmm(flat_logits, flat_prior, matrix).view_as(logits)
        return flat_logits.addmm_(flat_prior, matrix).view_as(logits)  # inference: in place, one pass

    def _interpolation_matrix(self, size_in: int, size_out: int, like: Tensor) -> Tensor:
        """Cached transpose of the 1-D linear interpolation matrix, [size_in, size_out], in like's dtype/device."""
        def build():
            return linear_interpolation_matrix(size_in, size_out, like.device, torch.float32).transpose(0, 1).to(
                like.dtype).contiguous()

        if torch.compiler.is_compiling():  # see resize_linear: no cache while tracing
            return build()
        key = ("T", size_in, size_out, like.device, like.dtype)
        if key not in self._interpolation_cache:
            self._interpolation_cache[key] = build()
        return self._interpolation_cache[key]

    def _check_input(self, x: Tensor) -> Tuple[int, ...]:
        if x.dim() != self.spatial_dims + 2:
            raise ValueError(f"expected input [B, C, *S] with {self.spatial_dims} spatial dims, got {tuple(x.shape)}.")
        return token_grid_shape(x.shape[2:], self.token_strides)

    # ---------------------------------------------------------------------------------------------- forward
    def _decode(self, skips: List[Tensor], priors: Optional[Tensor] = None,
                grid: Optional[Sequence[int]] = None) -> List[Tensor]:
        """The UNetDecoder loop without heads; returns every stage's output (lowest resolution first). With
        ``priors`` (encoder tokens), the projected prior is added to the output of each prior stage."""
        decoder = self.decoder
        features = []
        lres_input = skips[-1]
        for s in range(len(decoder.stages)):
            x = decoder.transpconvs[s](lres_input)
            x = torch.cat((x, skips[-(s + 2)]), 1)
            x = decoder.stages[s](x)
            if priors is not None and s in self.prior_stages:
                x = x + self._prior_feature(priors, s, grid, x)
            features.append(x)
            lres_input = x
        return features

    def _heads(self, features: List[Tensor], priors: Optional[Tensor] = None,
               grid: Optional[Sequence[int]] = None) -> Union[Tensor, List[Tensor]]:
        """Segmentation heads; with ``priors`` (decoder tokens), the folded prior logits are added at prior stages.
        Returns the highest-resolution output first (a list with deep supervision, one tensor otherwise)."""
        decoder = self.decoder
        last = len(decoder.stages) - 1
        stages = range(len(decoder.stages)) if decoder.deep_supervision else (last,)
        with_prior = [s for s in stages if s in self.prior_stages] if priors is not None else []
        if with_prior:
            with torch.autocast(device_type=priors.device.type, enabled=False):
                prior_logits = priors @ self._folded_prior_weights(with_prior).transpose(0, 1)  # [B, L, n·K]
            prior_logits = prior_logits.split(self.num_classes, dim=-1)
        outputs = []
        for s in stages:
            logits = decoder.seg_layers[s](features[s])
            if s in with_prior:
                logits = self._add_prior_logits(logits, prior_logits[with_prior.index(s)], grid)
            outputs.append(logits)
        outputs = outputs[::-1]
        return outputs if decoder.deep_supervision else outputs[0]

    def forward_features(self, x: Tensor) -> List[Tensor]:
        """Encoder + decoder stages without heads (``token_source="decoder"`` only): the decoder stage outputs,
        lowest resolution first; the last one is F. Pair with ``forward_heads`` (e.g. to mix/unmix F in between)."""
        if self.token_source != "decoder":
            raise RuntimeError("forward_features/forward_heads need token_source='decoder'.")
        self._check_input(x)
        return self._decode(self.encoder(x))

    def forward_heads(self, features: List[Tensor], return_scdl: bool = False):
        """Tokens from F = ``features[-1]``, SCDL, and the heads with priors. Same returns as ``forward``."""
        if self.token_source != "decoder":
            raise RuntimeError("forward_features/forward_heads need token_source='decoder'.")
        full = features[-1]
        grid = token_grid_shape(full.shape[2:], self.token_strides)
        if not return_scdl and self.prior_mode == "none":
            return self._heads(features)
        scdl_out = self.scdl(features_to_tokens(full, self.token_strides), compute_priors=bool(self.prior_stages),
                             compute_losses=return_scdl)
        outputs = self._heads(features, scdl_out.priors, grid)
        if not return_scdl:
            return outputs
        return outputs, SCDLAux(scdl_out, grid, self.token_strides, tuple(full.shape[2:]), full.detach())

    def forward(self, x: Tensor, return_scdl: bool = False):
        """``x``: [B, C_in, *S] with S divisible by the network's total stride.

        Returns what the base network returns (a list of deep-supervision logits, highest resolution first, or one
        logits tensor); with ``return_scdl=True`` a tuple ``(outputs, SCDLAux)``.
        """
        grid = self._check_input(x)
        if self.token_source == "decoder":
            return self.forward_heads(self._decode(self.encoder(x)), return_scdl)
        skips = self.encoder(x)
        if not return_scdl and self.prior_mode == "none":
            return self._heads(self._decode(skips))
        source = skips[self.token_stage]
        scdl_out = self.scdl(features_to_tokens(source, [1] * self.spatial_dims),
                             compute_priors=bool(self.prior_stages), compute_losses=return_scdl)
        outputs = self._heads(self._decode(skips, scdl_out.priors, grid))
        if not return_scdl:
            return outputs
        return outputs, SCDLAux(scdl_out, grid, self.token_strides, tuple(x.shape[2:]), source.detach())

    # ----------------------------------------------------------------------------------------------- losses
    def _labels(self, labels: Tensor, count: int, take_last: bool, name: str, aux: SCDLAux,
                ignore_label: Optional[int]) -> Tensor:
        batch = aux.scdl.mean_similarity.shape[0]
        if labels.shape[0] not in (count, batch):
            raise ValueError(f"{name} must hold {count} (or all {batch}) images, got shape {tuple(labels.shape)}.")
        if labels.shape[0] != count:
            labels = labels[batch - count:] if take_last else labels[:count]
        labels = prepare_labels(labels, self.num_classes, ignore_label, self.spatial_dims)
        if tuple(labels.shape[1:]) != aux.input_shape:
            raise ValueError(f"{name} must have the network input's spatial shape {aux.input_shape} (use the "
                             f"full-resolution target, target[0] with deep supervision), got {tuple(labels.shape)}.")
        return labels

    def labeled_one_hot(self, aux: SCDLAux, target: Tensor, n_labeled: int,
                        ignore_label: Optional[int] = None) -> Tensor:
        """One-hot [n_labeled, C + 1, *S] of the first ``n_labeled`` images' labels (channel C: ignored voxels)."""
        # fp16 on GPUs halves the traffic of this full-resolution map (its token fractions stay exact)
        return class_one_hot(self._labels(target, n_labeled, False, "target", aux, ignore_label), self.num_classes,
                             torch.float16 if aux.region_features.is_cuda else torch.float32)

    def anchor_rows(self, aux: SCDLAux, one_hot: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """SAC's rows for the first ``len(one_hot)`` images: per (image, class) the mean pre-MLP feature f of the
        class's region [n·C, D_x], its class [n·C] and its weight [n·C] (0 where the class is absent, or for the
        background when ``sac_include_background`` is off). ``one_hot`` from :meth:`labeled_one_hot`."""
        count = one_hot.shape[0]
        region = aux.region_features[:count]
        if tuple(region.shape[2:]) == aux.input_shape:  # decoder tokens: voxel-level class masks
            sums, voxels = class_region_sums(region, one_hot)
        else:  # encoder tokens: features at token resolution, each token weighted by its class fractions
            fractions = pool_to_grid(one_hot, aux.token_strides)[:, :-1].flatten(2).float()  # [n, C, L]
            sums = fractions @ features_to_tokens(region, [1] * self.spatial_dims).float()
            voxels = fractions.sum(dim=-1)
        present = voxels > 0
        if not self.sac_include_background:
            present[:, 0] = False
        # every (image, class) row is kept, absent ones with weight 0: static shapes, no host sync
        features = (sums / voxels.clamp_min(1e-6).unsqueeze(-1)).reshape(-1, sums.shape[-1])
        classes = torch.arange(self.num_classes, device=sums.device).repeat(count)
        return features, classes, present.reshape(-1).float()

    def scdl_loss_terms(self, aux: SCDLAux, target: Optional[Tensor], n_labeled: int,
                        pseudo_label: Optional[Tensor] = None, ignore_label: Optional[int] = None,
                        return_breakdown: bool = False):
        """The SCDL loss terms for a batch whose first ``n_labeled`` images are labeled.

        Args:
            aux: from ``forward(x, return_scdl=True)``.
            target: full-resolution integer labels [n_labeled or B, 1, *S] (or [.., *S]); only the labeled images are
                read. May be None when n_labeled = 0.
            n_labeled: number of labeled images at the start of the batch.
            pseudo_label: optional integer labels for the unlabeled images ([B − n_labeled or B, 1, *S]); their
                token proportions replace the default unlabeled weights stopgrad(Q).
            ignore_label: label value to drop (tokens with no other voxel are skipped; ignored voxels never enter
                proportions or anchors).
            return_breakdown: also return detached diagnostics.
        Returns:
            {'cdba_labeled', 'cdba_unlabeled', 'sac'} (scalars, fp32); with ``return_breakdown`` a tuple
            (terms, breakdown).
        """
        batch = aux.scdl.mean_similarity.shape[0]
        if not 0 <= n_labeled <= batch:
            raise ValueError(f"n_labeled must lie in [0, {batch}], got {n_labeled}.")
        labeled_weights = labeled_valid = unlabeled_weights = unlabeled_valid = None
        anchor_features = anchor_classes = anchor_weights = None
        if n_labeled > 0:
            if target is None:
                raise ValueError("target is required when n_labeled > 0.")
            one_hot = self.labeled_one_hot(aux, target, n_labeled, ignore_label)
            labeled_weights, labeled_valid = class_proportions_per_token(one_hot, aux.token_strides)
            anchor_features, anchor_classes, anchor_weights = self.anchor_rows(aux, one_hot)
        if pseudo_label is not None and n_labeled < batch:
            pseudo = self._labels(pseudo_label, batch - n_labeled, True, "pseudo_label", aux, ignore_label)
            unlabeled_weights, unlabeled_valid = class_proportions_per_token(class_one_hot(pseudo, self.num_classes),
                                                                             aux.token_strides)
        terms, breakdown = self.scdl.loss_terms(aux.scdl, n_labeled, labeled_weights, labeled_valid,
                                                unlabeled_weights, unlabeled_valid, anchor_features, anchor_classes,
                                                anchor_weights)
        return (terms, breakdown) if return_breakdown else terms

    def compute_conv_feature_map_size(self, input_size):
        """The base network's estimate (SCDL works on the much smaller token grid)."""
        return self.encoder.compute_conv_feature_map_size(input_size) + \
            self.decoder.compute_conv_feature_map_size(input_size)


def build_scdl_unet(base: nn.Module, num_classes: int, patch_size: Sequence[int], **options) -> SCDLUNet:
    """Wrap a plan-generated U-Net; ``options`` are SCDLUNet's keyword arguments (and SCDL's)."""
    return SCDLUNet(base, num_classes, patch_size, **options)


def build_scdl_network_from_plans(configuration_manager, num_input_channels: int, num_output_channels: int,
                                  enable_deep_supervision: bool = True, **options) -> SCDLUNet:
    """The plans' network (exactly what ``nnUNetTrainer.build_network_architecture`` builds) wrapped with SCDL.

    Call it from a trainer's static ``build_network_architecture`` with fixed ``options`` so that the predictor
    rebuilds the identical module before its strict ``load_state_dict``.
    """
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans  # only this helper needs nnU-Net

    base = get_network_from_plans(configuration_manager.network_arch_class_name,
                                  configuration_manager.network_arch_init_kwargs,
                                  configuration_manager.network_arch_init_kwargs_req_import,
                                  num_input_channels, num_output_channels, allow_init=True,
                                  deep_supervision=enable_deep_supervision)
    return SCDLUNet(base, num_output_channels, configuration_manager.patch_size, **options)
