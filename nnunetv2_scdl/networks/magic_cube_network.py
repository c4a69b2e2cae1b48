"""MagicNet's network on nnU-Net: the plans' U-Net plus a location head on each magic cube's encoder features.

``MagicCubeNetwork.forward(x)`` is the segmentation forward, so nnU-Net's trainer, predictor and checkpoints see a
plain segmentation network; the pieces GA-MagicNet's training step needs are separate methods. The trainer is
``nnunetv2_scdl.training.ga_magicnet``; user documentation: docs/magicnet.md.
"""
from contextlib import contextmanager
from typing import Callable, List, Optional, Sequence, Union

import torch
from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
from torch import nn

from nnunetv2_scdl.networks.location_head import LocationHead, location_head_in_features
from nnunetv2_scdl.networks.magic_cubes import CubeGrid, cube_size_at_stage, default_location_stage
from nnunetv2_scdl.networks.scdl_unet import SCDLUNet
from nnunetv2_scdl.networks.training_pass import accepts_training_pass

__all__ = ["MagicCubeNetwork", "cube_grid_from_configuration", "build_magic_cube_network"]


class MagicCubeNetwork(nn.Module):
    """A plan-generated U-Net (``PlainConvUNet``/``ResidualEncoderUNet``, or an ``SCDLUNet`` around one) plus
    MagicNet's location head on each cube's encoder features at ``location_stage``.

    ``forward(x)`` is the segmentation network's own forward (what nnU-Net's trainer and predictor call). The pieces
    MagicNet needs are exposed separately: :meth:`decode` (decoder stages without heads, lowest resolution first),
    :meth:`heads` (segmentation heads on those features; SCDL priors when the segmenter is an ``SCDLUNet``),
    :meth:`full_resolution_head` and :meth:`locate`; the trainer runs them inside ``forward`` through
    ``training_pass`` (:func:`~nnunetv2_scdl.networks.training_pass.accepts_training_pass`). ``.encoder``/``.decoder`` are the segmenter's (nnU-Net's deep
    supervision toggle writes ``decoder.deep_supervision``). State-dict keys: ``segmenter.*`` and ``location_head.*``.

    ``location_stage``: the encoder stage whose output (one cube's, flattened) the location head reads; None =
    :func:`~nnunetv2_scdl.networks.magic_cubes.default_location_stage` (the bottleneck wherever a cube reaches it as at
    least 2 voxels along every axis), -1 = the bottleneck, as in the released code.
    """

    def __init__(self, segmenter: nn.Module, cube_grid: CubeGrid, location_hidden_features: int = 4096,
                 location_stage: Optional[int] = None):
        super().__init__()
        if not hasattr(segmenter, "encoder") or not hasattr(segmenter, "decoder"):
            raise ValueError(f"MagicCubeNetwork needs a U-Net with .encoder and .decoder, got "
                             f"{type(segmenter).__name__}.")
        if isinstance(segmenter, SCDLUNet) and segmenter.token_source != "decoder":
            raise ValueError("GA-MagicNet with SCDL needs token_source='decoder' (the prior is injected at the head "
                             "of every path, computed from the feature that head receives).")
        self.segmenter = segmenter
        self.cube_grid = cube_grid
        strides = segmenter.encoder.strides
        if location_stage is None:
            location_stage = default_location_stage(cube_grid.cube_size, strides)
        if not -len(strides) <= location_stage < len(strides):
            raise ValueError(f"location_stage {location_stage} is not an encoder stage (the encoder has "
                             f"{len(strides)}).")
        self.location_stage = location_stage % len(strides)
        #: one cube's spatial size at the location stage
        self.location_feature_size = cube_size_at_stage(cube_grid.cube_size, strides, self.location_stage)
        in_features = location_head_in_features(segmenter.encoder.output_channels[self.location_stage],
                                                self.location_feature_size, (1,) * cube_grid.ndim)
        self.location_head = LocationHead(in_features, cube_grid.n_cubes, hidden_features=location_hidden_features)

    @property
    def encoder(self) -> nn.Module:
        return self.segmenter.encoder

    @property
    def decoder(self) -> nn.Module:
        return self.segmenter.decoder

    @property
    def uses_scdl(self) -> bool:
        return isinstance(self.segmenter, SCDLUNet)

    @accepts_training_pass
    def forward(self, x: torch.Tensor):
        return self.segmenter(x)

    def decode(self, skips: Sequence[torch.Tensor]) -> List[torch.Tensor]:
        """nnU-Net's ``UNetDecoder`` loop without the segmentation heads: every stage's output, lowest resolution
        first; the last one is F, the full-resolution feature (the input of the last head)."""
        decoder = self.decoder
        features, lower = [], skips[-1]
        for s in range(len(decoder.stages)):
            x = decoder.stages[s](torch.cat((decoder.transpconvs[s](lower), skips[-(s + 2)]), 1))
            features.append(x)
            lower = x
        return features

    def features(self, x: torch.Tensor) -> List[torch.Tensor]:
        return self.decode(self.encoder(x))

    def heads(self, features: List[torch.Tensor], return_scdl: bool = False):
        """Segmentation heads on ``decode``'s features: what ``forward`` returns (a deep-supervision list, highest
        resolution first, or one tensor); with ``return_scdl`` a tuple ``(outputs, aux)``, aux = ``SCDLAux`` (None
        without SCDL)."""
        if self.uses_scdl:
            return self.segmenter.forward_heads(features, return_scdl=return_scdl)
        decoder = self.decoder
        if decoder.deep_supervision:
            outputs = [decoder.seg_layers[s](features[s]) for s in range(len(features))][::-1]
        else:
            outputs = decoder.seg_layers[-1](features[-1])
        return (outputs, None) if return_scdl else outputs

    def full_resolution_head(self, full_feature: torch.Tensor) -> torch.Tensor:
        """Full-resolution logits from F alone (with SCDL: the prior computed from this F is injected)."""
        if not self.uses_scdl:
            return self.decoder.seg_layers[-1](full_feature)
        with _deep_supervision_off(self.decoder):
            return self.segmenter.forward_heads([None] * (len(self.decoder.stages) - 1) + [full_feature])

    def locate(self, cube_skips: Sequence[torch.Tensor], n_images: int) -> torch.Tensor:
        """Location logits [B·K, K] from the encoder outputs (every stage, as ``encoder`` returns them) of
        ``n_images`` images' cubes (image-major rows); the head reads stage ``location_stage``. Each image's K cubes
        form one batch of the head (as in MagicNet: its BatchNorm sees one image at a time)."""
        features = cube_skips[self.location_stage]
        return torch.cat([self.location_head(group) for group in features.chunk(n_images)])

    def compute_conv_feature_map_size(self, input_size):
        return self.segmenter.compute_conv_feature_map_size(input_size)


@contextmanager
def _deep_supervision_off(decoder):
    previous = decoder.deep_supervision
    decoder.deep_supervision = False
    try:
        yield
    finally:
        decoder.deep_supervision = previous


def cube_grid_from_configuration(configuration_manager, cube_size: Optional[Union[int, Sequence[int]]] = None
                                 ) -> CubeGrid:
    """The magic-cube grid of a plans configuration: ``CubeGrid.from_plan(patch_size, strides, cube_size)``.

    Raises ValueError, naming the patch size and strides, when no valid grid exists.
    """
    patch_size = tuple(configuration_manager.patch_size)
    strides = configuration_manager.network_arch_init_kwargs.get("strides")
    if strides is None:
        raise ValueError(f"GA-MagicNet needs the encoder strides of the plans' network "
                         f"({configuration_manager.network_arch_class_name}), but its arch_kwargs have no 'strides'.")
    try:
        return CubeGrid.from_plan(patch_size, strides, cube_size=cube_size)
    except ValueError as error:
        raise ValueError(f"GA-MagicNet cannot cut the plans' patch size {list(patch_size)} into magic cubes with the "
                         f"encoder strides {list(strides)} (cube_size={cube_size!r}): {error} Every cube must be a "
                         f"multiple of the encoder's total stride, divide the patch and keep at least two voxels at "
                         f"the bottleneck, and there must be at least two cubes. Choose another cube_size in a "
                         f"trainer subclass, or change the patch size in the plans.") from None


def build_magic_cube_network(configuration_manager, num_input_channels: int, num_output_channels: int,
                             enable_deep_supervision: bool = True, cube_size=None,
                             location_hidden_features: int = 4096, location_stage: Optional[int] = None,
                             wrap_segmenter: Optional[Callable[[nn.Module], nn.Module]] = None
                             ) -> MagicCubeNetwork:
    """The plans' U-Net (passed through ``wrap_segmenter`` when given, e.g. to wrap it in ``SCDLUNet``) plus a location head sized for the
    plan's cube grid. Deterministic given its arguments, so the predictor rebuilds exactly the trained module."""
    grid = cube_grid_from_configuration(configuration_manager, cube_size)  # fail before building anything
    segmenter = get_network_from_plans(configuration_manager.network_arch_class_name,
                                       configuration_manager.network_arch_init_kwargs,
                                       configuration_manager.network_arch_init_kwargs_req_import,
                                       num_input_channels, num_output_channels, allow_init=True,
                                       deep_supervision=enable_deep_supervision)
    if wrap_segmenter is not None:
        segmenter = wrap_segmenter(segmenter)
    return MagicCubeNetwork(segmenter, grid, location_hidden_features, location_stage)
