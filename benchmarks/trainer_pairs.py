"""What the cost benchmarks share: the pairs X / SCDL-X, each trainer built from a dataset's plans as
``nnUNetv2_train`` builds it, and the overhead statistic. Imported by ``trainer_step_cost.py`` and
``predict_cost.py`` (run them from anywhere: each script's folder is on ``sys.path``)."""
import os
import statistics
from typing import List, Optional, Sequence, Tuple
from unittest import mock


def add_pair_arguments(parser) -> None:
    """The options that choose the dataset, plans and X / SCDL-X pairs, shared by the cost scripts."""
    parser.add_argument("-d", "--dataset", required=True, help="dataset name or id")
    parser.add_argument("-p", "--plans", default="nnUNetPlans_cpu")
    parser.add_argument("-c", "--configuration", default="3d_fullres")
    parser.add_argument("--hosts", nargs="+", default=None,
                        help="host trainers X, e.g. nnUNetTrainerGACPS (default: the five hosts with an SCDL variant)")
    parser.add_argument("--variant", default="", choices=("", "_released"),
                        help="time nnUNetTrainerSCDL_X_released instead of the paper variant")


def scdl_pairs(hosts: Optional[Sequence[str]] = None, variant: str = "") -> List[Tuple[str, str]]:
    """[(X, SCDL-X)] for the host trainers ``hosts`` (default: the five hosts with an SCDL variant); ``variant`` ""
    (the paper variant) or "_released" is appended to the SCDL trainer's name."""
    from nnunetv2_scdl.evaluation.benchmark_report import SCDL_PAIRS

    scdl_of = dict(SCDL_PAIRS)
    hosts = list(hosts) if hosts else list(scdl_of)
    unknown = [host for host in hosts if host not in scdl_of]
    if unknown:
        raise SystemExit(f"no SCDL variant known for {', '.join(unknown)}; hosts: {', '.join(scdl_of)}")
    return [(host, scdl_of[host] + variant) for host in hosts]


def results_folder(folder: str):
    """``nnUNet_results`` points at ``folder`` inside (nnU-Net reads it when a trainer is built)."""
    return mock.patch.dict(os.environ, {"nnUNet_results": folder})


def build_trainer(name: str, dataset: str, plans_name: str, configuration: str, results: str, seed: int = 0):
    """Trainer ``name`` after ``initialize()`` (network, loss, optimiser), on the CPU, from the dataset's plans in
    ``nnUNet_preprocessed``. nnU-Net creates the trainer's output folder and log file when it is built: they go
    under ``results`` (a scratch folder), never under the user's ``nnUNet_results``. The global RNG is seeded with
    ``seed`` first, so X and SCDL-X start from the same host weights."""
    import torch
    from batchgenerators.utilities.file_and_folder_operations import join, load_json
    from nnunetv2.paths import nnUNet_preprocessed
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

    from nnunetv2_scdl.training.registry import ALL_TRAINERS

    if name not in ALL_TRAINERS:
        raise SystemExit(f"unknown trainer {name}; known: {', '.join(sorted(ALL_TRAINERS))}")
    folder = join(nnUNet_preprocessed, maybe_convert_to_dataset_name(dataset))
    plans = load_json(join(folder, plans_name + ".json"))
    plans["continue_training"] = False  # nnUNetv2_train's run_training sets it; nnU-Net 2.8's trainer pops it
    torch.manual_seed(seed)
    with results_folder(results):
        trainer = ALL_TRAINERS[name](plans, configuration, 0, load_json(join(folder, "dataset.json")),
                                     torch.device("cpu"))
    trainer.initialize()
    return trainer


def median_overhead(host_values: Sequence[float], scdl_values: Sequence[float]) -> float:
    """Median over rounds of SCDL-X / X − 1 (round i of one list paired with round i of the other)."""
    if len(host_values) != len(scdl_values) or not host_values:
        raise ValueError(f"need as many SCDL-X as X rounds, at least one; got {len(host_values)} and "
                         f"{len(scdl_values)}.")
    return statistics.median(scdl / host - 1 for host, scdl in zip(host_values, scdl_values))
