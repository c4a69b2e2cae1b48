"""SCDL for the co-training trainers: one SCDL per network (spec §1.5 [INFER], §7.4).

``CoTrainingSCDLAddon`` goes first in the bases of a co-training trainer
(``class nnUNetTrainerSCDL_X(CoTrainingSCDLAddon, nnUNetTrainerX)``). Each of A and B is a ``SCDLUNet`` around its
plan-generated U-Net; the SCDL loss of each net is :meth:`SCDLAddon.scdl_loss` (same weights λ and the host's ramp),
and the two are added. The logged ``scdl_*`` terms are the **sums** over A and B, so that

    L = L_host + λ_cdba·(cdba_l + ramp·cdba_u) + λ_kl·ramp·kl + λ_sac·sac     (each term = term_A + term_B).

Default ``scdl_prior_mode = "none"`` (spec §7.4: the released CPS/DHC checkpoints are plain networks, so SCDL adds
losses only and the inference graph is the plain ensemble). Set it to "head" or "decoder" in a subclass to inject
priors; it is a class attribute only, never an environment variable.
"""
from nnunetv2_scdl.networks.scdl_unet import SCDLUNet
from nnunetv2_scdl.training.co_training import build_dual_network
from nnunetv2_scdl.training.ema import unwrap_network
from nnunetv2_scdl.training.scdl_addon import SCDLAddon


class CoTrainingSCDLAddon(SCDLAddon):
    scdl_prior_mode = "none"

    @classmethod
    def build_network_architecture(cls, plans_manager, configuration_manager, num_input_channels: int,
                                   num_output_channels: int, enable_deep_supervision: bool = True):
        return build_dual_network(cls, configuration_manager, num_input_channels, num_output_channels,
                                  enable_deep_supervision)

    @classmethod
    def wrap_single_network(cls, network, configuration_manager, num_output_channels: int):
        return SCDLUNet(network, num_output_channels, configuration_manager.patch_size,
                        token_source=cls.scdl_token_source, prior_mode=cls.scdl_prior_mode)

    def forward_student(self, inputs):
        # through self.network, as the host does, so that nnU-Net's torch.compile covers the training forward
        (outputs_a, aux_a), (outputs_b, aux_b) = self.network(inputs, mode="both", return_scdl=True)
        return (outputs_a, outputs_b), (aux_a, aux_b)

    def auxiliary_loss(self, aux, target, n_labeled: int):
        dual = unwrap_network(self.network)
        total, summed = 0.0, {}
        for network, network_aux in zip((dual.net_a, dual.net_b), aux):
            loss, terms = self.scdl_loss(network, network_aux, target, n_labeled)
            total = total + loss
            for name, value in terms.items():
                summed[name] = summed.get(name, 0.0) + value.detach()
        return total, {f"scdl_{name}": value for name, value in summed.items()}
