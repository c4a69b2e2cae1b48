"""``nnUNetv2_scdl_trainers_path``: print the folder to put in ``nnUNet_extTrainer``.

    export nnUNet_extTrainer=$(nnUNetv2_scdl_trainers_path)
"""
import argparse
from pathlib import Path

_SHIM_MODULE = "scdl_trainers.py"


def trainers_dir() -> Path:
    """The folder of thin re-export modules that nnU-Net's trainer lookup should search.

    In a clone or an editable install this is the repository's ``trainers/``; a regular install carries the same files
    as ``nnunetv2_scdl/ext_trainers/``.
    """
    package_dir = Path(__file__).resolve().parent.parent
    for candidate in (package_dir.parent / "trainers", package_dir / "ext_trainers"):
        if (candidate / _SHIM_MODULE).is_file():
            return candidate
    raise FileNotFoundError(f"Cannot find the trainers folder ({_SHIM_MODULE}) next to or inside {package_dir}. "
                            f"Reinstall nnunetv2_scdl.")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="Print the folder that nnUNet_extTrainer must point at, e.g. "
                                                 "export nnUNet_extTrainer=$(nnUNetv2_scdl_trainers_path)")
    parser.parse_args(argv)
    print(trainers_dir())


if __name__ == "__main__":
    main()
