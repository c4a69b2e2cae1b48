"""How far apart SCDL's class-mean embeddings (SAC's semantic anchors) are in a trained model, next to its proxies.

SAC pulls each proxy mean μ_c towards its anchor, the unit mean embedding of class c's labeled region, so two
classes' proxies can separate only as far as their anchors do. This runs a trained SCDL model's inference network on
one patch per labeled training case (centred on the foreground), and prints for every SCDLUNet in it (two for a
co-training pair):

- cos(anchor_a, anchor_b) for each class pair: near 1, the embeddings do not tell the two classes apart;
- cos(anchor_c, μ_c): how closely the proxies sit on their anchors;
- cos(μ_a, μ_b), as ``nnUNetv2_scdl_proxies`` prints it;
- the token cone: the mean cosine of the patches' token embeddings to their mean direction (1: every token points
  the same way, whatever its class).

    export nnUNet_extTrainer=$PWD/trainers    # or the folder that holds the trainer class
    python benchmarks/scdl_anchor_geometry.py <model folder>/fold_0 \\
        --preprocessed $nnUNet_preprocessed/Dataset004_Hippocampus [--checkpoint checkpoint_best.pth]

The cases are the ``train`` cases of the fold in the preprocessed folder's ``splits_final.json`` (the labeled ones;
``--cases`` overrides them), read from the plans' preprocessed data.
"""
import argparse
import json
from pathlib import Path
from typing import Dict, Iterable, List, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from nnunetv2_scdl.evaluation.proxy_geometry import _class_names, checkpoint_file
from nnunetv2_scdl.networks.scdl_unet import SCDLUNet
from nnunetv2_scdl.scdl.losses import class_anchors


@torch.no_grad()
def anchor_geometry(network: SCDLUNet, images: torch.Tensor, labels: torch.Tensor) -> Dict[str, torch.Tensor]:
    """The anchor and proxy cosines of one SCDLUNet (eval mode) on labeled patches.

    Args:
        network: an SCDLUNet; it is put in eval mode.
        images: [B, C_in, *patch].
        labels: [B, 1, *patch] integer labels in [0, C).
    Returns ``anchor_cosines`` [C, C], ``anchor_proxy_cosines`` [C] (cos(anchor_c, μ_c)), ``proxy_cosines`` [C, C],
    ``present`` [C] bool (classes with labeled voxels; rows of absent classes are 0) and ``token_cone`` (scalar).
    The anchors are SAC's: per image and class the region's mean feature through the projection MLP without
    dropout, normalised, then averaged over images and normalised again.
    """
    network.eval()
    _, aux = network(images, return_scdl=True)
    one_hot = network.labeled_one_hot(aux, labels, images.shape[0])
    features, classes, weights = network.anchor_rows(aux, one_hot)
    anchors, present = class_anchors(network.scdl.anchor_embeddings(features), classes, network.num_classes, weights)
    unit_mu = F.normalize(network.scdl.class_proxies.mu.float(), dim=-1)
    tokens = aux.scdl.unit_embeddings.reshape(-1, aux.scdl.unit_embeddings.shape[-1])
    cone = (tokens @ F.normalize(tokens.mean(dim=0), dim=0)).mean()
    return {"anchor_cosines": anchors @ anchors.T, "anchor_proxy_cosines": (anchors * unit_mu).sum(dim=1),
            "proxy_cosines": unit_mu @ unit_mu.T, "present": present, "token_cone": cone}


def foreground_patch(data: np.ndarray, seg: np.ndarray, patch: Sequence[int]):
    """The ``patch``-sized crop of ``data`` [C, *S] and ``seg`` [1, *S] centred on the foreground (zero-padded where
    the case is smaller); nnU-Net's −1 outside the crop region becomes background."""
    pad = [(0, 0)] + [(0, max(0, p - n)) for p, n in zip(patch, seg.shape[1:])]
    data, seg = np.pad(data, pad), np.pad(np.maximum(seg, 0), pad)
    voxels = np.argwhere(seg[0] > 0)
    centre = voxels.mean(0).astype(int) if len(voxels) else np.array(seg.shape[1:]) // 2
    starts = [max(0, min(c - p // 2, n - p)) for c, p, n in zip(centre, patch, seg.shape[1:])]
    box = (slice(None),) + tuple(slice(s, s + p) for s, p in zip(starts, patch))
    return data[box], seg[box]


def scdl_unets(network: torch.nn.Module) -> List[tuple]:
    """``(name, SCDLUNet)`` for every SCDLUNet inside ``network`` (itself included)."""
    return [(name or "network", module) for name, module in network.named_modules() if isinstance(module, SCDLUNet)]


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[str]], label_columns: int = 1) -> str:
    """A Markdown table; the columns after the first ``label_columns`` hold numbers and are right-aligned."""
    lines = ["| " + " | ".join(header) + " |",
             "|" + "---|" * label_columns + "---:|" * (len(header) - label_columns)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def format_tables(results: Dict[str, Dict[str, torch.Tensor]], names: Sequence[str]) -> str:
    pairs = [(a, b) for a in range(len(names)) for b in range(a + 1, len(names))]
    header = ["module", "token cone"] + [f"cos anchor {names[a]}–{names[b]}" for a, b in pairs] + \
             [f"cos anchor–μ {n}" for n in names] + [f"cos μ {names[a]}–{names[b]}" for a, b in pairs]
    rows = []
    for module, r in results.items():
        row = [module, f"{float(r['token_cone']):.3f}"]
        row += [f"{float(r['anchor_cosines'][a, b]):+.3f}" for a, b in pairs]
        row += [f"{float(r['anchor_proxy_cosines'][c]):+.3f}" if r["present"][c] else "absent"
                for c in range(len(names))]
        row += [f"{float(r['proxy_cosines'][a, b]):+.3f}" for a, b in pairs]
        rows.append(row)
    return markdown_table(header, rows)


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of :func:`load_labeled_patches`."""
    parser.add_argument("fold", help="fold folder of a trained SCDL model (…/<trainer>__<plans>__<config>/fold_0)")
    parser.add_argument("--preprocessed", required=True, help="the dataset's nnU-Net preprocessed folder")
    parser.add_argument("--checkpoint", help="checkpoint file name in the fold folder (default: checkpoint_final.pth, "
                                             "else checkpoint_latest.pth)")
    parser.add_argument("--cases", nargs="+", help="case identifiers (default: the fold's train cases)")


def load_labeled_patches(args: argparse.Namespace):
    """The checkpoint path, its inference network (with at least one SCDLUNet inside), and one foreground-centred
    patch per labeled case: images [N, C_in, *patch] (float) and labels [N, 1, *patch] (long)."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class

    fold = Path(args.fold)
    fold_index = int(fold.name.split("_")[-1])
    checkpoint = checkpoint_file(fold / args.checkpoint if args.checkpoint else fold)
    predictor = nnUNetPredictor(use_mirroring=False, device=torch.device("cpu"), verbose=False)
    predictor.initialize_from_trained_model_folder(str(fold.parent), use_folds=(fold_index,),
                                                   checkpoint_name=checkpoint.name)
    if not scdl_unets(predictor.network):
        raise SystemExit(f"{checkpoint} holds no SCDL network; this script reads SCDL trainers only.")
    preprocessed = Path(args.preprocessed)
    cases = args.cases or json.loads((preprocessed / "splits_final.json").read_text())[fold_index]["train"]
    data_folder = preprocessed / predictor.configuration_manager.data_identifier
    dataset = infer_dataset_class(str(data_folder))(str(data_folder), cases)
    patch = predictor.configuration_manager.patch_size
    crops = [foreground_patch(*[np.asarray(a) for a in dataset.load_case(case)[:2]], patch) for case in cases]
    images = torch.from_numpy(np.stack([c[0] for c in crops])).float()
    labels = torch.from_numpy(np.stack([c[1] for c in crops])).long()
    return checkpoint, predictor.network, images, labels


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_model_arguments(parser)
    args = parser.parse_args()

    checkpoint, network, images, labels = load_labeled_patches(args)
    modules = scdl_unets(network)
    results = {name: anchor_geometry(module, images, labels) for name, module in modules}
    class_names = _class_names(checkpoint, modules[0][1].num_classes)
    names = [class_names[c] for c in range(len(class_names))]
    print(f"{checkpoint} ({len(images)} cases, one {tuple(images.shape[2:])} patch each, centred on the foreground)")
    print(format_tables(results, names))


if __name__ == "__main__":
    main()
