"""GA-CPS with its two networks' initial weights swapped, to test whether A and B train symmetrically.

Not part of the package: point ``nnUNet_extTrainer`` (or ``nnUNetv2_scdl_benchmark --ext-trainer-dir``) at this
folder. ``nnUNetTrainerGACPS_swapAB`` builds GA-CPS's two networks exactly as ``nnUNetTrainerGACPS`` does, with the
same random draws, and then exchanges their weights (``DualNetwork.swap_weights``): slot A starts from B's
Xavier-normal draw and slot B from A's rescaled He draw. Swapping consumes no random numbers, so with the same seed
the run sees the same batches as ``nnUNetTrainerGACPS``. If the training step treats A and B alike, the swapped run
mirrors the original one: its ``supervised_b``, ``cps_b`` and ``pseudo_dice_network_b`` equal the original's
``supervised_a``, ``cps_a`` and ``pseudo_dice_network_a``, and the other way round.
"""
from nnunetv2_scdl.training.ga_cps import nnUNetTrainerGACPS


class nnUNetTrainerGACPS_swapAB(nnUNetTrainerGACPS):
    @classmethod
    def build_network_architecture(cls, plans_manager, configuration_manager, num_input_channels: int,
                                   num_output_channels: int, enable_deep_supervision: bool = True):
        # the explicit signature matters: nnU-Net picks its calling convention by inspecting it
        return super().build_network_architecture(plans_manager, configuration_manager, num_input_channels,
                                                  num_output_channels, enable_deep_supervision).swap_weights()
