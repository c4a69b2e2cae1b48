"""What SCDL costs at inference, measured through nnU-Net's own prediction pipeline (what ``nnUNetv2_predict`` runs).

For each host X given, builds X and SCDL-X (``nnUNetTrainerSCDL_<X>``) from the dataset's plans as ``nnUNetv2_train``
does (``trainer_pairs.build_trainer``, same seed, so the host weights are identical), saves each trainer's
initialised weights as a model folder (``plans.json``, ``dataset.json``, ``fold_0/checkpoint_final.pth`` written by
the trainer's own ``save_checkpoint``) in a temporary folder, and loads it with
``nnUNetPredictor.initialize_from_trained_model_folder``, as ``nnUNetv2_predict`` does. It then times
``predict_from_files_sequential`` on each of the first ``--cases`` raw images of ``$nnUNet_raw/<dataset>/imagesTr``:
preprocessing, sliding window (tile step 0.5, Gaussian weighting), mirroring test-time augmentation (on by default),
resampling and export of the segmentation, on the CPU. ``nnUNetv2_predict -device cpu -npp 0 -nps 0`` runs exactly
this, with nnU-Net's progress bar turned off here. X and SCDL-X predict each case back to back, in alternating
order, so that each pair of timings meets the same load on a busy machine.

Times are process CPU seconds, so they hold up on a machine that is busy with other work (use ``--threads 1``; it
also limits SimpleITK to one thread). Before the rounds, each predictor predicts the first case ``--warmup`` times
(default once), untimed. The table gives per host the CPU seconds per case (the median over rounds of each round's
mean), the overhead, the median over all (case, round) pairs of SCDL-X / X − 1, with the quartiles of those ratios
(their spread is the measurement's noise), and for reference the floating-point overhead of one patch forward of the
predictor's network (``torch.utils.flop_counter``: convolutions and matrix products) and the share of it in SCDL's
projection MLP; ``--rounds 0`` counts the FLOPs only. Example::

    python benchmarks/predict_cost.py -d 4 -p nnUNetPlans_cpu --threads 1 --cases 10 --rounds 3 \\
        [--hosts nnUNetTrainerMeanTeacher nnUNetTrainerGACPS]

Needs ``nnUNet_raw`` and ``nnUNet_preprocessed`` with the dataset; nothing is written there or in ``nnUNet_results``
(model folders, predictions and the trainers' log files live in a temporary folder that is removed at the end).
"""
import argparse
import contextlib
import io
import os
import statistics
import tempfile
import time
from typing import List, Sequence, Tuple

from trainer_pairs import add_pair_arguments, build_trainer, median_overhead, scdl_pairs

CHECKPOINT_NAME = "checkpoint_final.pth"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_pair_arguments(parser)
    parser.add_argument("--cases", type=int, default=10, help="raw images predicted per round (the first N of imagesTr)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="timed rounds (each: every case with X and SCDL-X); 0: count the FLOPs only")
    parser.add_argument("--warmup", type=int, default=1,
                        help="untimed predictions of the first case by each predictor before the rounds")
    parser.add_argument("--step-size", type=float, default=0.5, help="tile step size (nnUNetv2_predict -step_size)")
    parser.add_argument("--disable-tta", action="store_true", help="no mirroring (nnUNetv2_predict --disable_tta)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--scdl-first", action="store_true",
                        help="build, load and warm up SCDL-X before X (the order shifts the timings, docs/scdl.md §7)")
    args = parser.parse_args(argv)
    if args.cases < 1 or args.threads < 1 or args.rounds < 0 or args.warmup < 0:
        parser.error("--cases and --threads must be at least 1, --rounds and --warmup non-negative")
    if not 0 < args.step_size <= 1:
        parser.error(f"--step-size must lie in (0, 1], got {args.step_size}")
    return args


def limit_threads(threads: int) -> None:
    """torch, its OpenMP/BLAS pools and SimpleITK use ``threads`` threads (call before the first prediction)."""
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[name] = str(threads)
    import SimpleITK
    import torch

    torch.set_num_threads(threads)
    SimpleITK.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)


def write_model_folder(trainer, folder: str) -> str:
    """A model folder as ``nnUNetv2_train`` leaves it and ``nnUNetPredictor`` loads it: ``plans.json``,
    ``dataset.json`` and ``fold_0/checkpoint_final.pth``, the latter written by the trainer's own
    ``save_checkpoint`` (so it holds the trainer's inference network). Returns ``folder``.

    The checkpoint carries the mirroring axes of test-time augmentation; nnU-Net sets them when training starts
    (``configure_rotation_dummyDA_mirroring_and_inital_patch_size``), so they are set here the same way. Without
    them the predictor would not mirror."""
    from batchgenerators.utilities.file_and_folder_operations import join, maybe_mkdir_p, save_json

    trainer.configure_rotation_dummyDA_mirroring_and_inital_patch_size()
    maybe_mkdir_p(join(folder, "fold_0"))
    save_json(trainer.plans_manager.plans, join(folder, "plans.json"), sort_keys=False)
    save_json(trainer.dataset_json, join(folder, "dataset.json"), sort_keys=False)
    trainer.save_checkpoint(join(folder, "fold_0", CHECKPOINT_NAME))
    return folder


def load_predictor(model_folder: str, step_size: float = 0.5, use_mirroring: bool = True):
    """``nnUNetPredictor`` on the CPU, set up as ``nnUNetv2_predict -device cpu`` sets it up (Gaussian weighting;
    nnU-Net turns ``perform_everything_on_device`` off on the CPU), with fold 0 of ``model_folder``."""
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    from nnunetv2_scdl.cli.commands import external_trainer_path

    os.environ["nnUNet_extTrainer"] = external_trainer_path(
        [p for p in os.environ.get("nnUNet_extTrainer", "").split(os.pathsep) if p])
    predictor = nnUNetPredictor(tile_step_size=step_size, use_gaussian=True, use_mirroring=use_mirroring,
                                perform_everything_on_device=False, device=torch.device("cpu"), verbose=False,
                                verbose_preprocessing=False, allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(model_folder, (0,), checkpoint_name=CHECKPOINT_NAME)
    return predictor


def raw_cases(raw_folder: str, file_ending: str, count: int) -> List[List[str]]:
    """The first ``count`` cases of ``raw_folder`` (sorted by case name), each the list of its channel files."""
    from nnunetv2.utilities.utils import create_lists_from_splitted_dataset_folder

    if not os.path.isdir(raw_folder):
        raise SystemExit(f"no raw images at {raw_folder} (is nnUNet_raw set to the dataset's raw data?)")
    cases = create_lists_from_splitted_dataset_folder(raw_folder, file_ending)
    if len(cases) < count:
        raise SystemExit(f"{raw_folder} holds {len(cases)} cases with file ending {file_ending}, {count} requested")
    return cases[:count]


def predict_seconds(predictor, cases: Sequence[Sequence[str]], output_folder: str) -> float:
    """Process CPU seconds of ``predict_from_files_sequential`` on ``cases`` (segmentations written to
    ``output_folder``, overwritten); nnU-Net's per-case messages are swallowed."""
    os.makedirs(output_folder, exist_ok=True)
    started = time.process_time()
    with contextlib.redirect_stdout(io.StringIO()):
        predictor.predict_from_files_sequential([list(case) for case in cases], output_folder,
                                                save_probabilities=False, overwrite=True)
    return time.process_time() - started


def patch_flops(predictor) -> Tuple[int, int]:
    """Floating-point operations of one forward of the predictor's network on one patch (eval, no autograd): all of
    them, and those of SCDL's projection MLPs (modules named ``*scdl.projection``; 0 without SCDL)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    network = predictor.network.eval()
    patch = torch.zeros(1, network_input_channels(predictor), *predictor.configuration_manager.patch_size)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        network(patch)
    projection = sum(sum(counts.values()) for module, counts in counter.get_flop_counts().items()
                     if module.endswith("scdl.projection"))
    return counter.get_total_flops(), projection


def network_input_channels(predictor) -> int:
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels

    return determine_num_input_channels(predictor.plans_manager, predictor.configuration_manager,
                                        predictor.dataset_json)


def main(argv=None):
    args = parse_args(argv)
    limit_threads(args.threads)
    from batchgenerators.utilities.file_and_folder_operations import join
    from nnunetv2.paths import nnUNet_raw
    from tqdm import tqdm

    pairs = scdl_pairs(args.hosts, args.variant)
    rows = []
    with tempfile.TemporaryDirectory(prefix="predict_cost_") as scratch, \
            tqdm(total=len(pairs) * args.rounds, desc="rounds", unit="round") as progress:
        for host, scdl in pairs:
            predictors, cases = {}, None
            for name in ((scdl, host) if args.scdl_first else (host, scdl)):
                with contextlib.redirect_stdout(io.StringIO()):  # the trainers' and the predictor's start-up messages
                    trainer = build_trainer(name, args.dataset, args.plans, args.configuration,
                                            join(scratch, "results"))
                    folder = write_model_folder(trainer, join(scratch, "models", name))
                    if cases is None:
                        cases = raw_cases(join(nnUNet_raw, trainer.plans_manager.dataset_name, "imagesTr"),
                                          trainer.dataset_json["file_ending"], args.cases)
                    del trainer
                    predictors[name] = load_predictor(folder, args.step_size, not args.disable_tta)
                for _ in range(args.warmup if args.rounds else 0):
                    predict_seconds(predictors[name], cases[:1], join(scratch, "predictions", name))
            flops = {name: patch_flops(predictor) for name, predictor in predictors.items()}
            seconds = {host: [], scdl: []}  # per round, per case
            for round_ in range(args.rounds):
                progress.set_postfix_str(host)
                for name in seconds:
                    seconds[name].append([])
                for index, case in enumerate(cases):  # X and SCDL-X on one case back to back, order alternating
                    for name in ((host, scdl) if (round_ + index) % 2 == 0 else (scdl, host)):
                        seconds[name][-1].append(predict_seconds(predictors[name], [case],
                                                                 join(scratch, "predictions", name)))
                progress.update()
            row = [host, str(len(cases))]
            if args.rounds:
                per_case = {name: [sum(times) / len(times) for times in seconds[name]] for name in seconds}
                pairs = [[t for times in seconds[name] for t in times] for name in (host, scdl)]
                quartiles = statistics.quantiles([s / h - 1 for h, s in zip(*pairs)], n=4) if len(pairs[0]) > 1 \
                    else [pairs[1][0] / pairs[0][0] - 1] * 3
                row += [f"{statistics.median(per_case[host]):.2f}", f"{statistics.median(per_case[scdl]):.2f}",
                        f"{100 * median_overhead(*pairs):+.1f} %",
                        f"{100 * quartiles[0]:+.1f} % … {100 * quartiles[2]:+.1f} %"]
                progress.write(f"{host}: mean s/case per round: X {', '.join(f'{t:.2f}' for t in per_case[host])}; "
                               f"SCDL-X {', '.join(f'{t:.2f}' for t in per_case[scdl])}")
            else:
                row += ["–"] * 4
            rows.append(row + [f"{flops[host][0] / 1e9:.2f}", f"{100 * (flops[scdl][0] / flops[host][0] - 1):+.1f} %",
                               f"{100 * flops[scdl][1] / flops[host][0]:.1f} %"])
    header = ["X", "cases", "X s/case", "SCDL-X s/case", "overhead per case", "quartiles", "X GFLOP per patch",
              "FLOP overhead per patch", "of which SCDL's MLP"]
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
