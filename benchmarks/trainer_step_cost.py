"""What SCDL costs per training step and per inference patch, measured on the real trainers and plans.

For each host X given, builds X and SCDL-X (``nnUNetTrainerSCDL_<X>``) from the dataset's plans exactly as
``nnUNetv2_train`` does (``initialize()``: network, loss, optimiser), then times, interleaved X / SCDL-X:

- train: one training step as ``train_step`` runs it after the batches are on the device (``compute_loss``, backward,
  clipping, optimiser step, ``after_optimizer_step``), on a synthetic batch of the plans' patch and batch size;
- infer: one forward of the inference network in eval mode without autograd, on one patch (what
  ``nnUNetv2_predict`` runs per sliding-window patch).

Data loading and augmentation are left out: they are the same for X and SCDL-X. Times are process CPU seconds, so
they hold up on a machine that is busy with other work (use ``--threads 1``). The overhead is the median over rounds
of SCDL-X / X − 1. The floating-point operations of one step and one patch (``torch.utils.flop_counter``; matrix
products and convolutions) are counted too: they do not depend on the machine's load. Example::

    python benchmarks/trainer_step_cost.py -d 4 -p nnUNetPlans_cpu --threads 1 --rounds 8 [--hosts nnUNetTrainerGACPS]

Needs ``nnUNet_preprocessed`` with the dataset's plans. Nothing is written there or in ``nnUNet_results`` (the
trainers' log files go to a temporary folder).
"""
import argparse
import statistics
import tempfile
import time
from contextlib import contextmanager

from trainer_pairs import add_pair_arguments, build_trainer, median_overhead, scdl_pairs


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_pair_arguments(parser)
    parser.add_argument("--rounds", type=int, default=8, help="timed rounds (each: X then SCDL-X)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.warmup < 0:
        parser.error("--rounds must be at least 1 and --warmup non-negative")
    return args


def synthetic_batch(trainer, seed: int):
    """(data, deep-supervision targets, unlabeled) with the plans' shapes; every class present in the target."""
    import torch
    import torch.nn.functional as F

    generator = torch.Generator().manual_seed(seed)
    patch = list(trainer.configuration_manager.patch_size)
    channels = trainer.num_input_channels
    classes = trainer.label_manager.num_segmentation_heads
    data = torch.randn(trainer.batch_size, channels, *patch, generator=generator)
    target = torch.randint(0, classes, (trainer.batch_size, 1, *patch), generator=generator).float()
    targets = [F.interpolate(target, scale_factor=[float(s) for s in scale], mode="nearest")
               for scale in trainer._get_deep_supervision_scales()]
    n = trainer.unlabeled_batch_size
    unlabeled = {key: torch.randn(n, channels, *patch, generator=generator) for key in ("data", "teacher_data")}
    return data, targets, unlabeled


def train_seconds(trainer, batch) -> float:
    data, target, unlabeled = batch
    started = time.process_time()
    trainer.optimizer.zero_grad(set_to_none=True)
    loss, _ = trainer.compute_loss(data, target, unlabeled)
    trainer.optimizer_step(loss)
    trainer.global_iteration += 1
    trainer.after_optimizer_step()
    return time.process_time() - started


@contextmanager
def inference_mode(trainer):
    """The trainer's inference network in eval mode without autograd, as ``nnUNetv2_predict`` runs it: with its
    weights in the default layout, as the predictor loads them (the trainer's CPU training layout is restored
    after)."""
    import torch

    from nnunetv2_scdl.training.hyperparameters import set_convolution_layout

    network = trainer.inference_network()
    was_training = network.training
    training_layout = trainer.cpu_channels_last and trainer.device.type == "cpu"
    network.eval()
    set_convolution_layout(network, channels_last=False)
    try:
        with torch.no_grad():
            yield network
    finally:
        set_convolution_layout(network, channels_last=training_layout)
        network.train(was_training)


def infer_seconds(trainer, batch) -> float:
    with inference_mode(trainer) as network:
        started = time.process_time()
        network(batch[0][:1])
        return time.process_time() - started


def step_flops(trainer, batch) -> tuple:
    """(training step, inference patch) floating-point operations, counted by ``FlopCounterMode``."""
    from torch.utils.flop_counter import FlopCounterMode

    data, target, unlabeled = batch
    trainer.optimizer.zero_grad(set_to_none=True)
    with FlopCounterMode(display=False) as train:
        loss, _ = trainer.compute_loss(data, target, unlabeled)
        loss.backward()
    trainer.optimizer.zero_grad(set_to_none=True)
    with inference_mode(trainer) as network, FlopCounterMode(display=False) as infer:
        network(data[:1])
    return train.get_total_flops(), infer.get_total_flops()


def main(argv=None):
    args = parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory(prefix="trainer_step_cost_") as results:  # the trainers' log files
        for names in scdl_pairs(args.hosts, args.variant):
            host = names[0]
            trainers = [build_trainer(name, args.dataset, args.plans, args.configuration, results) for name in names]
            times = {(name, kind): [] for name in names for kind in ("train", "infer")}
            flops = [step_flops(trainer, synthetic_batch(trainer, 0)) for trainer in trainers]
            for round_ in range(args.warmup + args.rounds):
                for name, trainer in zip(names, trainers):
                    batch = synthetic_batch(trainer, round_)
                    train, infer = train_seconds(trainer, batch), infer_seconds(trainer, batch)
                    if round_ >= args.warmup:
                        times[name, "train"].append(train)
                        times[name, "infer"].append(infer)
                print(f"{host}: round {round_ + 1}/{args.warmup + args.rounds}", flush=True)
            row = [host]
            for kind in ("train", "infer"):
                host_times, scdl_times = times[names[0], kind], times[names[1], kind]
                index = ("train", "infer").index(kind)
                row += [f"{1000 * statistics.median(host_times):.0f}", f"{1000 * statistics.median(scdl_times):.0f}",
                        f"{100 * median_overhead(host_times, scdl_times):+.1f} %",
                        f"{100 * (flops[1][index] / flops[0][index] - 1):+.1f} %"]
            rows.append(row)
    header = ["X", "X train ms", "SCDL-X train ms", "train overhead", "train FLOP overhead", "X infer ms",
              "SCDL-X infer ms", "infer overhead", "infer FLOP overhead"]
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
