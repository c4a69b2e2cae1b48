"""Two plan-generated U-Nets in one module, for co-training baselines (GA-CPS, DHC).

Co-training (docs/co_training.md). ``DualNetwork`` holds networks A and B, built by the same builder
(typically nnU-Net's ``get_network_from_plans``, which applies the He init). B can be re-initialised differently
(GA-CPS: Xavier-normal; DHC: keep both He). It is what the co-training trainers return from
``build_network_architecture``, so the checkpoint's ``network_weights`` holds both nets (keys ``net_a.*`` and
``net_b.*``), and the stock predictor, which calls ``network(x)`` and loads that state_dict strictly, gets the
ensemble (A(x) + B(x)) / 2 without any change.

nnU-Net's ``set_deep_supervision_enabled`` does ``network.decoder.deep_supervision = enabled``. ``DualNetwork.decoder``
is a small view whose ``deep_supervision`` setter writes both decoders, so that stock code reaches both nets.
"""
from typing import Callable, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn
from torch.nn.modules.conv import _ConvNd

NetworkOutput = Union[torch.Tensor, List[torch.Tensor], Tuple[torch.Tensor, ...]]


class InitWeights_XavierNormal:
    """Xavier-normal init (std = gain·√(2/(fan_in + fan_out))) for every conv and transposed conv; biases to 0.

    The counterpart of dynamic_network_architectures' ``InitWeights_He`` / ``InitWeights_XavierUniform`` (named
    alike on purpose); use with ``module.apply``. Norm layers keep their defaults (weight 1, bias 0).
    """

    def __init__(self, gain: float = 1.0):
        self.gain = gain

    def __call__(self, module: nn.Module) -> None:
        if isinstance(module, _ConvNd):  # Conv1/2/3d and ConvTranspose1/2/3d
            nn.init.xavier_normal_(module.weight, gain=self.gain)
            if module.bias is not None:
                nn.init.zeros_(module.bias)


def xavier_normal_expected_norm(weight: torch.Tensor, gain: float = 1.0) -> float:
    """E‖w‖ under Xavier-normal init, taken as √(numel · gain² · 2/(fan_in + fan_out)) (fans as torch's
    ``xavier_normal_`` computes them, so also for transposed convs)."""
    fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(weight)
    return (weight.numel() * gain ** 2 * 2.0 / (fan_in + fan_out)) ** 0.5


class RescaleToXavierNormalNorm:
    """Rescales every conv and transposed conv weight, as it is, to Xavier-normal's expected norm
    (:func:`xavier_normal_expected_norm`); biases and norm layers are left alone.

    Applied after nnU-Net's He init, the network keeps He's random draw but gets Xavier's per-layer scale: with
    instance norm after every conv, a layer's effective learning rate goes as 1/‖w‖², so a He-initialised network
    would otherwise move 2–9× slower per layer than a Xavier-initialised partner under one optimiser. Use with
    ``module.apply``.
    """

    def __init__(self, gain: float = 1.0):
        self.gain = gain

    @torch.no_grad()
    def __call__(self, module: nn.Module) -> None:
        if isinstance(module, _ConvNd):
            norm = module.weight.norm()
            if norm > 0:
                module.weight.mul_(xavier_normal_expected_norm(module.weight, self.gain) / norm)


def average_network_outputs(output_a: NetworkOutput, output_b: NetworkOutput) -> NetworkOutput:
    """(a + b) / 2 for one logits tensor, or element-wise for deep-supervision lists/tuples (same type returned)."""
    if isinstance(output_a, torch.Tensor) and isinstance(output_b, torch.Tensor):
        if output_a.shape != output_b.shape:
            raise ValueError(f"average_network_outputs: output shapes differ: {tuple(output_a.shape)} vs "
                             f"{tuple(output_b.shape)}.")
        return (output_a + output_b) / 2
    if isinstance(output_a, (list, tuple)) and isinstance(output_b, (list, tuple)):
        if len(output_a) != len(output_b):
            raise ValueError(f"average_network_outputs: A returned {len(output_a)} outputs and B {len(output_b)} "
                             f"(is deep supervision set on only one of them?).")
        averaged = [average_network_outputs(a, b) for a, b in zip(output_a, output_b)]
        return averaged if isinstance(output_a, list) else tuple(averaged)
    raise ValueError(f"average_network_outputs: cannot average a {type(output_a).__name__} with a "
                     f"{type(output_b).__name__}; both must be tensors, or both lists/tuples of tensors.")


class DualDecoderView:
    """Stands in for ``network.decoder`` so that ``view.deep_supervision = x`` sets both networks' decoders.

    It is a plain object (not an nn.Module), so it adds nothing to state_dicts or parameters.
    """

    def __init__(self, decoders: Sequence[nn.Module]):
        self._decoders = tuple(decoders)

    @property
    def decoders(self) -> Tuple[nn.Module, ...]:
        return self._decoders

    @property
    def deep_supervision(self) -> bool:
        values = {bool(decoder.deep_supervision) for decoder in self._decoders}
        if len(values) != 1:
            raise RuntimeError("DualDecoderView: the two decoders disagree on deep_supervision; set it through "
                               "DualNetwork.decoder.deep_supervision or set_deep_supervision_enabled().")
        return values.pop()

    @deep_supervision.setter
    def deep_supervision(self, enabled: bool) -> None:
        for decoder in self._decoders:
            decoder.deep_supervision = enabled


class DualNetwork(nn.Module):
    """Networks A and B for co-training; ``forward`` returns their average, so inference treats it as one network.

    Args:
        net_a, net_b: two distinct networks with the same output structure (e.g. two plan-generated PlainConvUNets).
            Each must have ``.decoder.deep_supervision`` (nnU-Net's U-Nets do) for deep supervision toggling.

    ``forward(x, mode)``:
        mode='average' (default; what nnU-Net's predictor and validation call): (A(x) + B(x)) / 2, a tensor, or with
            deep supervision a list averaged per scale.
        mode='both': the tuple (A(x), B(x)); the training path for co-training. Going through ``forward`` (rather
            than calling ``net_a`` directly) keeps DDP's gradient hooks and torch.compile in the loop.
        mode='both', return_scdl=True: ((A_outputs, A_aux), (B_outputs, B_aux)) of two ``SCDLUNet`` s, for the SCDL
            co-training variants (same reason: the training forward stays inside the compiled module).
        mode='a' / 'b': one network only. Under DDP this leaves the other net's parameters unused, which needs
            ``find_unused_parameters=True``; prefer 'both'.

    Shapes: x [B, C_in, *spatial] → logits [B, C, *spatial] (or a list of those, highest resolution first).
    """

    FORWARD_MODES = ("average", "both", "a", "b")

    def __init__(self, net_a: nn.Module, net_b: nn.Module):
        super().__init__()
        if not isinstance(net_a, nn.Module) or not isinstance(net_b, nn.Module):
            raise ValueError(f"DualNetwork: net_a and net_b must be nn.Modules, got {type(net_a).__name__} and "
                             f"{type(net_b).__name__}.")
        if net_a is net_b:
            raise ValueError("DualNetwork: net_a and net_b are the same object; co-training needs two networks.")
        self.net_a = net_a
        self.net_b = net_b

    @classmethod
    def from_builder(cls, build_network: Callable[[], nn.Module],
                     init_a: Optional[Callable[[nn.Module], None]] = None,
                     init_b: Optional[Callable[[nn.Module], None]] = InitWeights_XavierNormal()) -> "DualNetwork":
        """Build A and B by calling ``build_network()`` twice, then apply ``init_a`` / ``init_b`` via ``Module.apply``.

        ``init_x=None`` keeps the builder's init (nnU-Net's get_network_from_plans applies InitWeights_He). Defaults
        give GA-CPS's pairing (A: He from the builder, B: Xavier-normal); pass ``init_b=None`` for DHC (both He).
        """
        net_a, net_b = build_network(), build_network()
        if net_a is net_b:
            raise ValueError("DualNetwork.from_builder: build_network returned the same object twice; it must build a "
                             "new network on every call.")
        if init_a is not None:
            net_a.apply(init_a)
        if init_b is not None:
            net_b.apply(init_b)
        return cls(net_a, net_b)

    @torch.no_grad()
    def swap_weights(self) -> "DualNetwork":
        """Exchanges the weights (parameters and buffers) of A and B in place and returns ``self``.

        For symmetry checks: co-training treats A and B alike, so a run started from swapped weights mirrors the
        original run, A for B. Both networks must have the same architecture.
        """
        state_a = {name: tensor.clone() for name, tensor in self.net_a.state_dict().items()}
        self.net_a.load_state_dict(self.net_b.state_dict())
        self.net_b.load_state_dict(state_a)
        return self

    @property
    def decoder(self) -> DualDecoderView:
        """A view over both decoders; ``.decoder.deep_supervision = x`` (what nnU-Net does) sets A and B."""
        for name, net in (("net_a", self.net_a), ("net_b", self.net_b)):
            if not hasattr(getattr(net, "decoder", None), "deep_supervision"):
                # not AttributeError: nn.Module.__getattr__ would swallow it and report a missing 'decoder'
                raise RuntimeError(f"DualNetwork.{name} has no decoder.deep_supervision; deep supervision cannot "
                                   f"be toggled on it.")
        return DualDecoderView((self.net_a.decoder, self.net_b.decoder))

    def set_deep_supervision_enabled(self, enabled: bool) -> None:
        self.decoder.deep_supervision = enabled

    def forward(self, x: torch.Tensor, mode: str = "average", return_scdl: bool = False):
        if return_scdl:  # SCDL co-training: each net returns (outputs, SCDLAux)
            if mode != "both":
                raise ValueError(f"DualNetwork.forward: return_scdl=True needs mode='both', got {mode!r}.")
            return self.net_a(x, return_scdl=True), self.net_b(x, return_scdl=True)
        if mode == "average":
            return average_network_outputs(self.net_a(x), self.net_b(x))
        if mode == "both":
            return self.net_a(x), self.net_b(x)
        if mode == "a":
            return self.net_a(x)
        if mode == "b":
            return self.net_b(x)
        raise ValueError(f"DualNetwork.forward: mode must be one of {self.FORWARD_MODES}, got {mode!r}.")
