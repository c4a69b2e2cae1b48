"""How long one plan-generated U-Net stays on the background plateau, by supervised loss and initialisation.

A single network is trained on the labeled cases of a fold, with nnU-Net's trainer (its optimiser, augmentation,
gradient clipping, and the poly learning rate over the probe's steps), with either

- ``dcce``: nnU-Net's Dice + CE (the supervised reference), or
- ``ga``: GA-CPS's supervised loss, GACE(k=10, γ=0.5) + GADice, under the same deep supervision,

from nnU-Net's He init (``he``), Xavier-normal (``xavier_normal``, GA-CPS's net B), He scaled by 1/√2
(``he_scaled``: the weight norm Xavier gives a conv with as many inputs as outputs, in He's proportions) or He with
each conv rescaled to Xavier-normal's expected norm (``he_xavier_norm``, co_training.NETWORK_INITS). Every
``--every`` steps it predicts a fixed set of validation patches and prints the loss, the foreground share of the
prediction and of the reference, and the Dice per foreground class.

    python benchmarks/plateau_probe.py -d 4 -p nnUNetPlans_cpu --loss ga --init he --steps 900

Needs ``nnUNet_preprocessed`` with the dataset's splits; ``nnUNet_results`` defaults to a temporary folder (nothing
there is kept) and ``nnUNet_n_proc_DA`` to 0.
"""
import argparse
import math
import os
import random
import tempfile
import time


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-d", "--dataset", required=True, help="dataset name or id")
    parser.add_argument("-p", "--plans", default="nnUNetPlans_cpu")
    parser.add_argument("-c", "--configuration", default="3d_fullres")
    parser.add_argument("--fold", type=int, default=0)
    parser.add_argument("--loss", choices=("dcce", "ga"), required=True)
    parser.add_argument("--init", choices=("he", "xavier_normal", "he_scaled", "he_xavier_norm"), required=True)
    parser.add_argument("--steps", type=int, default=900)
    parser.add_argument("--iterations-per-epoch", type=int, default=15,
                        help="the poly learning rate steps once per this many iterations, as in nnU-Net")
    parser.add_argument("--every", type=int, default=50, help="evaluate every this many steps")
    parser.add_argument("--val-batches", type=int, default=4, help="validation batches kept fixed for the whole run")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.steps < args.iterations_per_epoch:
        parser.error(f"--steps ({args.steps}) must be at least --iterations-per-epoch ({args.iterations_per_epoch})")

    os.environ.setdefault("nnUNet_results", tempfile.mkdtemp(prefix="plateau_probe_"))
    os.environ.setdefault("nnUNet_n_proc_DA", "0")
    os.environ.setdefault("nnUNet_compile", "f")
    import numpy as np
    import torch
    from batchgenerators.utilities.file_and_folder_operations import join, load_json
    from nnunetv2.paths import nnUNet_preprocessed
    from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

    from nnunetv2_scdl.losses.class_weighting import hard_dice_per_class
    from nnunetv2_scdl.training.co_training import NETWORK_INITS, nnUNetTrainerCoTraining
    from nnunetv2_scdl.training.ga_cps import GASupervisedLoss

    class PlateauProbeTrainer(nnUNetTrainer):
        def _build_loss(self):
            if args.loss == "dcce":
                return super()._build_loss()
            # GA-CPS's DS weights (nnU-Net's, lowest scale 0), borrowed rather than restated
            weights = nnUNetTrainerCoTraining.deep_supervision_weights(self)
            return DeepSupervisionWrapper(GASupervisedLoss(10.0, 0.5), weights)

    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    folder = join(nnUNet_preprocessed, maybe_convert_to_dataset_name(args.dataset))
    plans = load_json(join(folder, f"{args.plans}.json"))
    plans["continue_training"] = False  # what nnUNetv2_train's get_trainer_from_args adds, popped by the trainer
    trainer = PlateauProbeTrainer(plans, args.configuration, args.fold, load_json(join(folder, "dataset.json")),
                                  torch.device("cpu"))
    trainer.num_epochs = math.ceil(args.steps / args.iterations_per_epoch)
    trainer.initialize()
    if args.init == "he_scaled":
        with torch.no_grad():
            for module in trainer.network.modules():
                if isinstance(module, torch.nn.modules.conv._ConvNd):
                    module.weight.mul_(2 ** -0.5)
    elif NETWORK_INITS[args.init] is not None:
        trainer.network.apply(NETWORK_INITS[args.init]())
    trainer.optimizer, trainer.lr_scheduler = trainer.configure_optimizers()
    trainer.dataloader_train, trainer.dataloader_val = trainer.get_dataloaders()
    validation = [next(trainer.dataloader_val) for _ in range(args.val_batches)]
    reference = torch.cat([batch["target"][0][:, 0] for batch in validation])
    num_classes = len(trainer.label_manager.foreground_labels) + 1

    print(f"{args.loss} loss, {args.init} init, {args.steps} steps, seed {args.seed}: "
          f"{len(reference)} validation patches, reference foreground {float((reference > 0).float().mean()):.4f}")
    start = time.time()
    trainer.network.train()
    for step in range(args.steps):
        if step % args.iterations_per_epoch == 0:
            trainer.lr_scheduler.step(step // args.iterations_per_epoch)
        loss = trainer.train_step(next(trainer.dataloader_train))["loss"]
        if (step + 1) % args.every and step + 1 != args.steps:
            continue
        trainer.network.eval()
        with torch.no_grad():
            prediction = torch.cat([trainer.network(batch["data"])[0].argmax(1) for batch in validation])
        trainer.network.train()
        dice = hard_dice_per_class(prediction, reference, num_classes)[1:].tolist()  # pooled over the patches
        print(f"step {step + 1:5d}  loss {float(loss):7.3f}  foreground {float((prediction > 0).float().mean()):.4f}"
              f"  Dice {' '.join(f'{d:.3f}' for d in dice)}  {time.time() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
