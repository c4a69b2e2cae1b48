"""CPU time of one training step with the convolution weights contiguous and channels-last (``cpu_channels_last``).

Builds each trainer twice from the dataset's plans as ``nnUNetv2_train`` does, once with ``SCDL_CPU_CHANNELS_LAST=0``
(the contiguous layout everywhere: network, EMA teacher, optimiser state) and once with the default, with the same
initial weights, then times one training step of each (the same synthetic batch as ``trainer_step_cost.py``, after
the batches are on the device), alternating round by round. Times are process CPU seconds, so they hold up on a
machine that is busy with other work. Example::

    python benchmarks/cpu_memory_format.py -d 4 -p nnUNetPlans_cpu --threads 1 --rounds 4 \\
        --trainers nnUNetTrainerMeanTeacher nnUNetTrainerSCDL_MT nnUNetTrainerSCDL_GACPS

Trainers: the semi-supervised ones (their step takes a labeled and an unlabeled batch). Needs
``nnUNet_preprocessed`` with the dataset's plans; the trainers' log files go to a temporary folder.
"""
import argparse
import os
import statistics
import tempfile
from unittest import mock

from trainer_pairs import build_trainer
from trainer_step_cost import synthetic_batch, train_seconds

LAYOUTS = ("contiguous", "channels-last")


def build_with_layout(name: str, args, results: str, channels_last: bool):
    with mock.patch.dict(os.environ, {"SCDL_CPU_CHANNELS_LAST": "1" if channels_last else "0"}):
        return build_trainer(name, args.dataset, args.plans, args.configuration, results)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-d", "--dataset", required=True, help="dataset name or id")
    parser.add_argument("-p", "--plans", default="nnUNetPlans_cpu")
    parser.add_argument("-c", "--configuration", default="3d_fullres")
    parser.add_argument("--trainers", nargs="+", default=["nnUNetTrainerMeanTeacher", "nnUNetTrainerSCDL_GACPS"])
    parser.add_argument("--rounds", type=int, default=4, help="timed rounds (each: both layouts)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.warmup < 0:
        parser.error("--rounds must be at least 1 and --warmup non-negative")
    import torch

    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory(prefix="cpu_memory_format_") as results:
        for name in args.trainers:
            trainers = {layout: build_with_layout(name, args, results, layout == "channels-last")
                        for layout in LAYOUTS}
            times = {layout: [] for layout in LAYOUTS}
            for round_ in range(args.warmup + args.rounds):
                batch = synthetic_batch(trainers[LAYOUTS[0]], round_)
                for layout in LAYOUTS:
                    seconds = train_seconds(trainers[layout], batch)
                    if round_ >= args.warmup:
                        times[layout].append(seconds)
                print(f"{name}: round {round_ + 1}/{args.warmup + args.rounds}", flush=True)
            plain, last = (statistics.median(times[layout]) for layout in LAYOUTS)
            rows.append(f"| {name} | {1000 * plain:.0f} | {1000 * last:.0f} | {100 * (last / plain - 1):+.1f} % |")
    print("| trainer | contiguous ms | channels-last ms | change |\n|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
