"""nnunetv2_scdl: semi-supervised nnU-Net trainers (SCDL and its four host baselines)."""
from setuptools import setup

setup(
    name="nnunetv2_scdl",
    version="0.1.0",
    description="Semi-supervised nnU-Net v2 trainers: mean teacher, GA-CPS, DHC, GA-MagicNet, GenericSSL, with and "
                "without SCDL (Semantic Class Distribution Learning).",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=[
        "nnunetv2_scdl",
        "nnunetv2_scdl.scdl",
        "nnunetv2_scdl.losses",
        "nnunetv2_scdl.networks",
        "nnunetv2_scdl.data",
        "nnunetv2_scdl.training",
        "nnunetv2_scdl.evaluation",
        "nnunetv2_scdl.cli",
        # The top-level trainers/ folder (the directory nnUNet_extTrainer points at) ships inside the package, so a
        # non-editable install has it too. nnUNetv2_scdl_trainers_path prints wherever it lives.
        "nnunetv2_scdl.ext_trainers",
    ],
    package_dir={"nnunetv2_scdl.ext_trainers": "trainers"},
    install_requires=[
        "nnunetv2>=2.8,<2.9",
        "torch",
        "numpy",
        "tqdm",
        "matplotlib",
        "monai>=1.5",  # surface distances for the evaluator (imported lazily)
    ],
    extras_require={"test": ["pytest>=7"]},
    entry_points={
        "console_scripts": [
            "nnUNetv2_scdl_trainers_path=nnunetv2_scdl.cli.trainers_path:main",
            "nnUNetv2_scdl_preprocess_unlabeled=nnunetv2_scdl.cli.preprocess_unlabeled:main",
            "nnUNetv2_scdl_make_split=nnunetv2_scdl.cli.make_split:main",
            "nnUNetv2_scdl_demo=nnunetv2_scdl.cli.demo:main",
            "nnUNetv2_scdl_evaluate=nnunetv2_scdl.cli.evaluate:main",
            "nnUNetv2_scdl_convert_dataset=nnunetv2_scdl.cli.convert_dataset:main",
            "nnUNetv2_scdl_cpu_plans=nnunetv2_scdl.cli.cpu_plans:main",
            "nnUNetv2_scdl_benchmark=nnunetv2_scdl.cli.benchmark:main",
            "nnUNetv2_scdl_benchmark_report=nnunetv2_scdl.cli.benchmark_report:main",
            "nnUNetv2_scdl_self_train=nnunetv2_scdl.cli.self_train:main",
            "nnUNetv2_scdl_plateau=nnunetv2_scdl.cli.plateau:main",
            "nnUNetv2_scdl_proxies=nnunetv2_scdl.cli.proxies:main",
        ]
    },
)
