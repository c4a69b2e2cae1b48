"""The two SCDL variants: the paper's formulas (default) and the released code's behaviour.

One switch selects every detail on which the paper and the released code differ:

| detail | ``"paper"`` (default) | ``"released"`` |
|---|---|---|
| CDBA loss | L_E2P + L_P2E | L_P2E + 0.1·L_dist (no E2P term) |
| L_P2E | class level: (1/|C_p|) Σ_c exp(−(E_c⁺ − E_c⁻)) | per token: mean_{n,c} exp(−(2w − 1)·Ā) |
| P2E assignment (in Q and r^center) | softmax over the tokens of an image | softmax over the classes (equals P_e2p) |
| proxy initialisation | μ Xavier-uniform, σ = ``PAPER_INITIAL_SIGMA`` | [μ | ρ] Xavier-uniform (σ ≈ 0.69) |
| projection MLP hidden width | D | 2·D |

Neither variant has a KL term: the paper's total loss is baseline + E2P + P2E + SAC, and the released code's
symmetric KL between P2E and E2P is identically zero, because both are the same softmax over classes.
How the priors enter the host network is chosen per host by the trainers (``scdl_prior_modes``).

The paper does not give the projection MLP's widths. The released code's hidden width 2·D makes the MLP most of
SCDL's cost (on a 700-token batch it is 94 % of SCDL's forward FLOPs); the paper variant uses D, which keeps SCDL
within 5 % of the host's training step. The token features it maps have 8 to 32 channels in nnU-Net's plans, far
fewer than D.
"""
from dataclasses import dataclass
from typing import Dict

__all__ = ["SCDLVariant", "SCDL_VARIANTS", "PAPER_INITIAL_SIGMA", "get_variant"]

#: σ_c at initialisation in the paper variant. With D = 256 a sample's noise norm is then σ·√D ≈ 0.32, against
#: ‖μ_c‖ ≈ 1, so a proxy sample keeps a cosine of about 0.95 with its own mean: samples, r^dist and P2E carry the
#: class signal from the first step. (The released initialisation, σ ≈ 0.69, gives a noise norm of about 11.)
PAPER_INITIAL_SIGMA = 0.02


@dataclass(frozen=True)
class SCDLVariant:
    """The settings of one variant (see the module docstring)."""

    name: str
    p2e_level: str  # "class" or "token"
    p2e_softmax: str  # "tokens" or "classes"
    e2p_weight: float
    dist_weight: float
    initial_sigma: float  # σ_c at initialisation; ≤ 0 = the released Xavier-uniform [μ | ρ]
    projection_hidden_factor: int  # the projection MLP's hidden width, in multiples of D


SCDL_VARIANTS: Dict[str, SCDLVariant] = {
    "paper": SCDLVariant("paper", p2e_level="class", p2e_softmax="tokens", e2p_weight=1.0, dist_weight=0.0,
                         initial_sigma=PAPER_INITIAL_SIGMA, projection_hidden_factor=1),
    "released": SCDLVariant("released", p2e_level="token", p2e_softmax="classes", e2p_weight=0.0, dist_weight=0.1,
                            initial_sigma=0.0, projection_hidden_factor=2),
}


def get_variant(name: str) -> SCDLVariant:
    """The variant called ``name``; a clear error for anything else."""
    if name not in SCDL_VARIANTS:
        raise ValueError(f"SCDL variant must be one of {sorted(SCDL_VARIANTS)}, got {name!r}.")
    return SCDL_VARIANTS[name]
