"""Which network of a co-training checkpoint (GA-CPS, DHC, with or without SCDL) learned what.

nnU-Net's validation and prediction use the ensemble (A(x) + B(x)) / 2, so a network that predicts background
everywhere can hide behind its partner. This loads each trainer's ``checkpoint_final.pth``, runs net A and net B
separately on one patch per validation case (centred on a foreground class), and prints the share of voxels each
predicts per class, next to the reference.

    python benchmarks/co_training_probe.py --preprocessed $nnUNet_preprocessed/Dataset011_BTCV \
        --results bench/btcv_20pct/nnUNet_results --trainers nnUNetTrainerGACPS nnUNetTrainerDHC
"""
import argparse
import glob
import os

import numpy as np
import torch


def centred_patch(data: np.ndarray, seg: np.ndarray, patch, label: int):
    """Pad to at least ``patch`` and cut the patch centred on ``label``'s voxels (on the volume centre without)."""
    pad = [(0, 0)] + [(0, max(0, p - n)) for p, n in zip(patch, seg.shape[1:])]
    data, seg = np.pad(data, pad), np.pad(seg, pad)
    voxels = np.argwhere(seg[0] == label)
    centre = voxels.mean(0).astype(int) if len(voxels) else np.array(seg.shape[1:]) // 2
    starts = [max(0, min(c - p // 2, n - p)) for c, p, n in zip(centre, patch, seg.shape[1:])]
    box = tuple(slice(start, start + p) for start, p in zip(starts, patch))
    return data[(slice(None),) + box], seg[(slice(None),) + box]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preprocessed", required=True, help="nnU-Net preprocessed dataset folder")
    parser.add_argument("--results", required=True, help="nnUNet_results folder holding the trainers' model folders")
    parser.add_argument("--trainers", nargs="+", required=True)
    parser.add_argument("-p", "--plans", default="nnUNetPlans_cpu")
    parser.add_argument("-c", "--configuration", default="3d_fullres")
    parser.add_argument("--fold", type=int, default=0)
    parser.add_argument("--label", type=int, default=1, help="class the patches are centred on")
    args = parser.parse_args()

    from batchgenerators.utilities.file_and_folder_operations import load_json
    from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class
    from nnunetv2.utilities.find_class_by_name import recursive_find_python_class
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    import nnunetv2_scdl.training
    from nnunetv2_scdl.networks.dual_network import average_network_outputs
    plans_manager = PlansManager(os.path.join(args.preprocessed, f"{args.plans}.json"))
    configuration = plans_manager.get_configuration(args.configuration)
    num_classes = len(load_json(os.path.join(args.preprocessed, "dataset.json"))["labels"])
    cases = load_json(os.path.join(args.preprocessed, "splits_final.json"))[args.fold]["val"]
    folder = os.path.join(args.preprocessed, configuration.data_identifier)
    dataset = infer_dataset_class(folder)(folder, cases)
    patches = [centred_patch(*dataset.load_case(case)[:2], configuration.patch_size, args.label) for case in cases]
    reference = sum(np.bincount(seg[0].astype(int).ravel().clip(0), minlength=num_classes) for _, seg in patches)
    print(f"{len(cases)} validation patches of {list(configuration.patch_size)}, centred on class {args.label}")
    print(f"  {'reference':24s}", np.round(100 * reference / reference.sum(), 1).tolist())
    for trainer in args.trainers:
        trainer_class = recursive_find_python_class(nnunetv2_scdl.training.__path__[0], trainer,
                                                    "nnunetv2_scdl.training")
        network = trainer_class.build_network_architecture(plans_manager, configuration, 1, num_classes, False)
        checkpoint, = glob.glob(os.path.join(args.results, "*", f"{trainer}__{args.plans}__{args.configuration}",
                                             f"fold_{args.fold}", "checkpoint_final.pth"))
        network.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=False)["network_weights"])
        network.eval()
        counts = {"net A": 0, "net B": 0, "ensemble": 0}
        for data, _ in patches:
            x = torch.from_numpy(np.ascontiguousarray(data)[None]).float()
            with torch.no_grad():
                logits_a, logits_b = network(x, mode="both")
            # the ensemble as nnU-Net predicts it: DualNetwork's average of the logits
            for name, logits in (("net A", logits_a), ("net B", logits_b),
                                 ("ensemble", average_network_outputs(logits_a, logits_b))):
                counts[name] = counts[name] + np.bincount(logits.argmax(1).ravel().numpy(), minlength=num_classes)
        print(trainer, "(voxel share per class %, background first)")
        for name, count in counts.items():
            print(f"  {name:24s}", np.round(100 * count / count.sum(), 1).tolist())


if __name__ == "__main__":
    main()
