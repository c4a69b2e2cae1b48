"""Does every trainer run on this device? nnU-Net's own command lines on a tiny phantom dataset.

For each trainer: ``nnUNetv2_train ID 3d_fullres 0 -tr T -device D`` for 2 epochs of 3 iterations (on CUDA with
nnU-Net's AMP; its final validation and export included), then ``nnUNetv2_predict ... -device D`` on the two test
images. Trainers named in ``--compiled`` run a second time with nnU-Net's ``torch.compile`` (``nnUNet_compile=t``).
Prints a markdown table (and writes it to ``OUTPUT/summary.md``): return codes, epochs, the last training loss and
pseudo Dice, the final validation Dice, the number of predictions written, and whether a NaN loss was logged.

This checks that the trainers run on the device, not what they learn: two epochs on a phantom say nothing about
accuracy. Example (about 5 minutes on an H200, most of it compiling)::

    python benchmarks/cuda_smoke.py --device cuda -o /tmp/cuda_smoke

``--reader NibabelIO`` plans and reads the phantom with nnU-Net's NibabelIO instead of SimpleITKIO, for a machine
where SimpleITK cannot be installed (nnU-Net still imports it; a stand-in module that fails on use is enough then).
"""
import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, List, Sequence

import torch

from nnunetv2_scdl.cli.commands import console_command, external_trainer_path
from nnunetv2_scdl.data.phantoms import make_phantom_dataset
from nnunetv2_scdl.evaluation.benchmark_report import BENCHMARK_TRAINERS

DATASET_ID = 990
CONFIGURATION = "3d_fullres"


def run(cmd: Sequence[str], log: Path, env: Dict[str, str], timeout: float) -> int:
    with open(log, "a") as handle:
        try:
            return subprocess.run(list(map(str, cmd)), stdout=handle, stderr=subprocess.STDOUT,
                                  env={**os.environ, **env}, timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            handle.write(f"\ntimed out after {timeout:.0f} s\n")
            return 124


def prepare_dataset(work: Path, reader: str) -> Dict[str, str]:
    """Phantom (6 labeled, 6 unlabeled, 2 test cases of 20x28x28), planned and preprocessed, unlabeled included."""
    folders = {name: work / name for name in ("nnUNet_raw", "nnUNet_preprocessed")}
    for folder in folders.values():
        folder.mkdir(parents=True)
    env = {name: str(folder) for name, folder in folders.items()}
    env.update(nnUNet_n_proc_DA="1", nnUNet_def_n_proc="1")
    written = make_phantom_dataset(env["nnUNet_raw"], DATASET_ID, "PhantomSmoke", n_labeled=6, n_unlabeled=6,
                                   n_test=2, shape=(20, 28, 28), spacing=(2.0, 1.0, 1.0), seed=1)
    if reader:
        dataset_json = Path(written.dataset_folder) / "dataset.json"
        content = json.loads(dataset_json.read_text())
        content["overwrite_image_reader_writer"] = reader
        dataset_json.write_text(json.dumps(content, indent=2))
    log = work / "logs" / "prepare.log"
    steps = (console_command("nnUNetv2_plan_and_preprocess") + ["-d", DATASET_ID, "-c", CONFIGURATION, "-np", 1,
                                                                 "-npfp", 1],
             console_command("nnUNetv2_scdl_preprocess_unlabeled") + ["-d", DATASET_ID, "-c", CONFIGURATION,
                                                                       "-np", 1])
    for step in steps:
        if run(step, log, env, timeout=600) != 0:
            sys.exit(f"preparing the phantom failed; see {log}")
    return {name: env[name] for name in folders} | {"test_images": str(Path(written.dataset_folder) / "imagesTs")}


def train_and_predict(trainer: str, compiled: bool, work: Path, folders: Dict[str, str], device: str,
                      timeout: float) -> dict:
    tag = f"{trainer}_{'compiled' if compiled else 'eager'}"
    results = work / f"results_{'compiled' if compiled else 'eager'}"
    env = {
        "nnUNet_raw": folders["nnUNet_raw"], "nnUNet_preprocessed": folders["nnUNet_preprocessed"],
        "nnUNet_results": str(results), "nnUNet_extTrainer": external_trainer_path(),
        "nnUNet_compile": "t" if compiled else "f", "nnUNet_n_proc_DA": "0", "nnUNet_def_n_proc": "2",
        "OMP_NUM_THREADS": "2",  # several runs share the cores
        "SCDL_NUM_EPOCHS": "2", "SCDL_NUM_ITERATIONS_PER_EPOCH": "3", "SCDL_NUM_VAL_ITERATIONS_PER_EPOCH": "1",
    }
    predictions = work / "predictions" / tag
    start = time.perf_counter()
    train_rc = run(console_command("nnUNetv2_train") + [DATASET_ID, CONFIGURATION, 0, "-tr", trainer,
                                                        "-device", device],
                   work / "logs" / f"train_{tag}.log", env, timeout)
    predict_rc = run(console_command("nnUNetv2_predict") + ["-i", folders["test_images"], "-o", predictions,
                                                            "-d", DATASET_ID, "-c", CONFIGURATION, "-tr", trainer,
                                                            "-f", 0, "-device", device, "-npp", 1, "-nps", 1],
                     work / "logs" / f"predict_{tag}.log", env, timeout)
    row = {"run": tag, "train rc": train_rc, "predict rc": predict_rc, "seconds": round(time.perf_counter() - start)}
    fold = next(results.glob(f"*/{trainer}__nnUNetPlans__{CONFIGURATION}/fold_0"), None)
    row.update(read_fold(fold) if fold else {})
    row["predicted"] = len(list(predictions.glob("*.nii.gz")))
    return row


def read_fold(fold: Path) -> dict:
    """Epochs, last loss, last pseudo Dice and NaN check from the final checkpoint; Dice from the validation."""
    row = {}
    checkpoint = fold / "checkpoint_final.pth"
    if checkpoint.is_file():
        logging = torch.load(checkpoint, map_location="cpu", weights_only=False)["logging"]
        losses = logging["train_losses"]
        row["epochs"] = len(losses)
        row["last train loss"] = round(float(losses[-1]), 3)
        row["last pseudo Dice"] = [round(float(d), 3) for d in logging["dice_per_class_or_region"][-1]]
        row["NaN loss"] = any(math.isnan(float(v)) for v in losses + logging["val_losses"])
    summary = fold / "validation" / "summary.json"
    if summary.is_file():
        row["val Dice"] = round(json.loads(summary.read_text())["foreground_mean"]["Dice"], 3)
    return row


def markdown(rows: List[dict]) -> str:
    columns = ["run", "train rc", "predict rc", "epochs", "last train loss", "last pseudo Dice", "val Dice",
               "predicted", "NaN loss", "seconds"]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(row.get(c, "-")) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-o", "--output", type=Path, required=True, help="work folder (emptied first)")
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu", "mps"))
    parser.add_argument("--trainers", nargs="+", default=list(BENCHMARK_TRAINERS))
    parser.add_argument("--compiled", nargs="*", default=["nnUNetTrainerSCDL_MT", "nnUNetTrainerSCDL_GACPS",
                                                          "nnUNetTrainerSCDL_DHC"],
                        help="trainers to run again with nnUNet_compile=t")
    parser.add_argument("--parallel", type=int, default=6, help="runs at a time")
    parser.add_argument("--timeout", type=float, default=300, help="seconds per train or predict command")
    parser.add_argument("--reader", default="", help="e.g. NibabelIO (see above); default: nnU-Net's choice")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    shutil.rmtree(args.output, ignore_errors=True)
    (args.output / "logs").mkdir(parents=True)
    folders = prepare_dataset(args.output, args.reader)
    runs = [(t, False) for t in args.trainers] + [(t, True) for t in args.compiled]
    with ThreadPoolExecutor(args.parallel) as pool:
        futures = [pool.submit(train_and_predict, t, compiled, args.output, folders, args.device, args.timeout)
                   for t, compiled in runs]
        rows = []
        for future in futures:
            rows.append(future.result())
            print(f"done: {rows[-1]['run']} (train rc {rows[-1]['train rc']}, predict rc {rows[-1]['predict rc']})",
                  flush=True)
    table = markdown(rows)
    (args.output / "summary.md").write_text(table + "\n")
    print(table)
    failed = [r["run"] for r in rows if r["train rc"] or r["predict rc"] or r.get("NaN loss") or not r["predicted"]]
    print(f"{len(rows) - len(failed)} of {len(rows)} runs passed" + (f"; failed: {failed}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
