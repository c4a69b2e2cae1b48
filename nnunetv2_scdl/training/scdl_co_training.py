"""SCDL for the co-training trainers: one SCDL per network.

``CoTrainingSCDLAddon`` goes first in the bases of a co-training trainer
(``class nnUNetTrainerSCDL_X(CoTrainingSCDLAddon, nnUNetTrainerX)``). Each of A and B is a ``SCDLUNet`` around its
plan-generated U-Net, with the priors in its decoder (paper variant; the released variant trains SCDL as a loss only,
``prior_mode="none"``, as its plain-network CPS checkpoints imply). The ensemble (A(x) + B(x))/2 that nnU-Net
predicts with is then made of the two prior-injected networks. The SCDL loss of each net is
:meth:`SCDLAddon.scdl_loss` (same weights λ and the host's ramp), and the two are added. The logged ``scdl_*`` terms
are the **sums** over A and B, so that

    L = L_host + λ_cdba·(cdba_l + ramp·cdba_u) + λ_sac·sac     (each term = term_A + term_B).
"""
from nnunetv2_scdl.training.ema import unwrap_network
from nnunetv2_scdl.training.scdl_addon import SCDLAddon


class CoTrainingSCDLAddon(SCDLAddon):
    scdl_prior_modes = {"paper": "decoder", "released": "none"}

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
