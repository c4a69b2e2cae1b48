"""How sharply a trained SCDL model's priors depend on the token embedding, at the priors' temperature τ_prior.

r^dist weights the proxy samples by softmax(⟨ẑ, p̂⟩/τ) and r^center weights the proxy means by the joint assignment Q
(P_e2p and P_p2e at τ). Once the proxies of two classes point apart, a small τ makes both priors nearly one-hot in
the class, so a small turn of a token's embedding can switch its prior. This runs a trained SCDL model's inference
network on one foreground-centred patch per labeled case and prints, for every SCDLUNet in it and every τ:

- top-class share: the mean over tokens of the largest class weight of r^dist (Σ_s α_{c,s}) and of Q;
- gain: the mean over tokens of ‖r(n(ẑ + δ)) − r(ẑ)‖ / ‖n(ẑ + δ) − ẑ‖ for r^dist and r^center, with δ Gaussian
  noise of norm ``--noise`` × ‖ẑ‖ (1 %) per token, averaged over ``--repeats`` draws: how much a prior turns per
  unit turn of the embedding (r^tok, the embedding itself, has gain about 1 at any τ).

    export nnUNet_extTrainer=$PWD/benchmarks/scdl_ablation    # or the folder that holds the trainer class
    python benchmarks/scdl_prior_sharpness.py <model folder>/fold_0 \\
        --preprocessed $nnUNet_preprocessed/Dataset004_Hippocampus --checkpoint checkpoint_best.pth --tau 0.2 1

The cases are the fold's ``train`` cases (see ``scdl_anchor_geometry.py``, whose loading this shares).
"""
import argparse
import sys
from pathlib import Path
from typing import Dict, Sequence

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scdl_anchor_geometry import (add_model_arguments, load_labeled_patches, markdown_table,  # noqa: E402
                                  scdl_unets)

from nnunetv2_scdl.networks.scdl_unet import SCDLUNet  # noqa: E402
from nnunetv2_scdl.scdl.module import SCDL  # noqa: E402


def class_weighted_priors(scdl: SCDL, unit_z: torch.Tensor, tau: float):
    """r^dist and r^center of unit embeddings ẑ [B, L, D] at τ_prior = ``tau`` (eval-mode proxy samples), as
    ``SCDL.class_weighted_priors`` computes them, with the per-class weights of r^dist (Σ_s α, [B, L, C]) and Q."""
    unit_mu, _, samples = scdl.proxy_geometry(with_mean_sample=False)  # μ̂ [C, D], p̂ [C, S_prior, D]
    dist, centre, joint = scdl.class_weighted_priors(unit_z, unit_mu, samples, tau)
    alpha = torch.softmax(torch.einsum("bld,csd->blcs", unit_z, samples).flatten(2) / tau, dim=-1)
    return dist, centre, alpha.view(*joint.shape, -1).sum(dim=-1), joint


@torch.no_grad()
def prior_sharpness(network: SCDLUNet, images: torch.Tensor, taus: Sequence[float], noise: float = 0.01,
                    repeats: int = 4, seed: int = 0) -> Dict[float, Dict[str, float]]:
    """For each τ: ``dist_top_share``, ``q_top_share``, ``dist_gain`` and ``centre_gain`` (see the module
    docstring) of one SCDLUNet in eval mode on ``images`` [B, C_in, *patch]."""
    network.eval()
    _, aux = network(images, return_scdl=True)
    unit_z = aux.scdl.unit_embeddings.float()
    generator = torch.Generator().manual_seed(seed)
    perturbed = []
    for _ in range(repeats):
        delta = torch.randn(unit_z.shape, generator=generator)
        delta = delta * (noise / delta.norm(dim=-1, keepdim=True))  # ‖δ‖ = noise · ‖ẑ‖ (‖ẑ‖ = 1)
        perturbed.append(F.normalize(unit_z + delta, dim=-1))
    results = {}
    for tau in taus:
        dist, centre, alpha, joint = class_weighted_priors(network.scdl, unit_z, tau)
        dist_gain, centre_gain = [], []
        for moved in perturbed:
            turn = (moved - unit_z).norm(dim=-1)
            moved_dist, moved_centre = class_weighted_priors(network.scdl, moved, tau)[:2]
            dist_gain.append(((moved_dist - dist).norm(dim=-1) / turn).mean())
            centre_gain.append(((moved_centre - centre).norm(dim=-1) / turn).mean())
        results[tau] = {"dist_top_share": float(alpha.max(dim=-1).values.mean()),
                        "q_top_share": float(joint.max(dim=-1).values.mean()),
                        "dist_gain": float(torch.stack(dist_gain).mean()),
                        "centre_gain": float(torch.stack(centre_gain).mean())}
    return results


def format_table(results: Dict[str, Dict[float, Dict[str, float]]]) -> str:
    header = ["module", "τ_prior", "r^dist top-class share", "Q top-class share", "gain r^dist", "gain r^center"]
    rows = [[module, f"{tau:g}", f"{r['dist_top_share']:.3f}", f"{r['q_top_share']:.3f}", f"{r['dist_gain']:.4f}",
             f"{r['centre_gain']:.4f}"] for module, by_tau in results.items() for tau, r in by_tau.items()]
    return markdown_table(header, rows)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_model_arguments(parser)
    parser.add_argument("--tau", type=float, nargs="+", default=[0.2, 1.0], help="τ_prior values (default 0.2 1)")
    parser.add_argument("--noise", type=float, default=0.01, help="‖δ‖ relative to ‖ẑ‖ (default 0.01)")
    parser.add_argument("--repeats", type=int, default=4, help="noise draws per τ (default 4)")
    args = parser.parse_args()
    if any(t <= 0 for t in args.tau) or args.noise <= 0 or args.repeats < 1:
        parser.error("--tau and --noise must be positive and --repeats at least 1")

    checkpoint, network, images, _ = load_labeled_patches(args)
    results = {name: prior_sharpness(module, images, args.tau, args.noise, args.repeats)
               for name, module in scdl_unets(network)}
    print(f"{checkpoint} ({len(images)} cases, one {tuple(images.shape[2:])} patch each, centred on the foreground)")
    print(format_table(results))


if __name__ == "__main__":
    main()
