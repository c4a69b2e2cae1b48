"""Which way the segmentation loss and SCDL's losses push a trained SCDL model's parameters.

For every SCDLUNet of a checkpoint (two for a co-training pair) this takes the gradients, on one foreground-centred
patch per labeled case (train mode), of

- the segmentation loss: nnU-Net's Dice + CE on the full-resolution logits (deep supervision off; batch Dice as the
  plans' configuration says), which reaches μ and the projection MLP through the priors in the decoder;
- λ_cdba·L_CDBA on the labeled tokens and λ_sac·L_SAC, the labeled part of the trainers' SCDL loss;

with respect to three parameter groups: the host U-Net (everything outside ``scdl``), the projection MLP, and the
proxy means μ. It prints the gradient norms and the cosine between the segmentation gradient and each SCDL gradient,
averaged over ``--repeats`` forwards (dropout and proxy samples differ between them). A cosine near −1 means the two
losses pull the group in opposite directions.

    export nnUNet_extTrainer=$PWD/benchmarks/scdl_ablation    # or the folder that holds the trainer class
    python benchmarks/scdl_gradient_conflict.py <model folder>/fold_0 \\
        --preprocessed $nnUNet_preprocessed/Dataset004_Hippocampus --checkpoint checkpoint_best.pth

By default the weights are those the trainer optimises (the mean teacher's student, stored as
``checkpoint['nnunetv2_scdl']['training_network_weights']``); ``--inference-weights`` uses the checkpoint's network
weights (the EMA teacher) instead.
"""
import argparse
import json
import sys
from pathlib import Path
from typing import Dict, List

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scdl_anchor_geometry import (add_model_arguments, load_labeled_patches, markdown_table,  # noqa: E402
                                  scdl_unets)

from nnunetv2_scdl.networks.scdl_unet import SCDLUNet  # noqa: E402
from nnunetv2_scdl.training.scdl_addon import SCDLAddon  # noqa: E402
from nnunetv2_scdl.training.ssl_base import CHECKPOINT_KEY  # noqa: E402

GROUPS = ("host", "mlp", "mu")
SCDL_LOSSES = ("cdba", "sac")


def parameter_groups(network: SCDLUNet) -> Dict[str, List[torch.nn.Parameter]]:
    """The host U-Net's parameters, the projection MLP's and μ."""
    return {"host": [p for name, p in network.named_parameters() if not name.startswith("scdl.")],
            "mlp": list(network.scdl.projection.parameters()),
            "mu": [network.scdl.class_proxies.mu]}


def _flat_gradient(loss: torch.Tensor, parameters: List[torch.nn.Parameter]) -> torch.Tensor:
    gradients = torch.autograd.grad(loss, parameters, retain_graph=True, allow_unused=True)
    return torch.cat([(torch.zeros_like(p) if g is None else g).flatten() for g, p in zip(gradients, parameters)])


def gradient_conflict(network: SCDLUNet, images: torch.Tensor, labels: torch.Tensor, segmentation_loss,
                      cdba_weight: float, sac_weight: float, repeats: int = 3) -> Dict[str, Dict[str, float]]:
    """Gradient norms and cosines per parameter group, means over ``repeats`` train-mode forwards.

    Args:
        network: an SCDLUNet; it is put in train mode with deep supervision off.
        images: [B, C_in, *patch]; labels: [B, 1, *patch] integer labels in [0, C).
        segmentation_loss: ``loss(logits, labels)`` → scalar (e.g. nnU-Net's Dice + CE).
        cdba_weight, sac_weight: λ_cdba and λ_sac.
    Returns ``{group: {"segmentation", "cdba", "sac": gradient norm, "cos_cdba", "cos_sac": cosine with the
    segmentation gradient}}`` for the groups ``host``, ``mlp`` and ``mu`` (a cosine is 0 where a gradient is 0).
    """
    network.train()
    network.decoder.deep_supervision = False
    groups = parameter_groups(network)
    sums = {group: dict.fromkeys(("segmentation", "cdba", "sac", "cos_cdba", "cos_sac"), 0.0) for group in groups}
    for _ in range(repeats):
        logits, aux = network(images, return_scdl=True)
        terms = network.scdl_loss_terms(aux, labels, images.shape[0])
        losses = {"segmentation": segmentation_loss(logits, labels), "cdba": cdba_weight * terms["cdba_labeled"],
                  "sac": sac_weight * terms["sac"]}
        for group, parameters in groups.items():
            gradients = {name: _flat_gradient(loss, parameters) for name, loss in losses.items()}
            for name, gradient in gradients.items():
                sums[group][name] += float(gradient.norm()) / repeats
            for name in SCDL_LOSSES:
                sums[group][f"cos_{name}"] += float(F.cosine_similarity(gradients["segmentation"], gradients[name],
                                                                        dim=0)) / repeats
    return sums


def format_table(results: Dict[str, Dict[str, Dict[str, float]]]) -> str:
    header = ["module", "group", "‖g‖ segmentation", "‖g‖ λ·CDBA", "‖g‖ λ·SAC", "cos(seg, CDBA)", "cos(seg, SAC)"]
    rows = [[module, group, f"{r['segmentation']:.4f}", f"{r['cdba']:.4f}", f"{r['sac']:.4f}", f"{r['cos_cdba']:+.2f}",
             f"{r['cos_sac']:+.2f}"] for module, groups in results.items() for group, r in groups.items()]
    return markdown_table(header, rows, label_columns=2)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_model_arguments(parser)
    parser.add_argument("--inference-weights", action="store_true",
                        help="use the checkpoint's network weights (the EMA teacher) instead of the trained ones")
    parser.add_argument("--cdba-weight", type=float, default=SCDLAddon.scdl_weight_cdba, help="λ_cdba (default %(default)s)")
    parser.add_argument("--sac-weight", type=float, default=SCDLAddon.scdl_weight_sac, help="λ_sac (default %(default)s)")
    parser.add_argument("--repeats", type=int, default=3, help="forwards to average over (default %(default)s)")
    args = parser.parse_args()

    from nnunetv2.training.loss.compound_losses import DC_and_CE_loss
    from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss

    checkpoint, network, images, labels = load_labeled_patches(args)
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    trained = state.get(CHECKPOINT_KEY, {}).get("training_network_weights")  # saved from the unwrapped network
    weights = "inference (checkpoint network weights)"
    if trained is not None and not args.inference_weights:
        network.load_state_dict(trained)
        weights = "trained (training_network_weights)"
    modules = scdl_unets(network)
    model = Path(args.fold).parent  # <trainer>__<plans>__<configuration>
    configuration = json.loads((model / "plans.json").read_text())["configurations"][model.name.split("__")[-1]]
    dice_ce = DC_and_CE_loss({"batch_dice": bool(configuration.get("batch_dice", False)), "smooth": 1e-5,
                              "do_bg": False, "ddp": False}, {},
                             weight_ce=1, weight_dice=1, dice_class=MemoryEfficientSoftDiceLoss)
    torch.manual_seed(0)
    results = {name: gradient_conflict(module, images, labels, dice_ce, args.cdba_weight, args.sac_weight,
                                       args.repeats) for name, module in modules}
    print(f"{checkpoint}, {weights} weights ({len(images)} labeled cases, one patch each; λ_cdba = "
          f"{args.cdba_weight}, λ_sac = {args.sac_weight}; means over {args.repeats} forwards)")
    print(format_table(results))


if __name__ == "__main__":
    main()
