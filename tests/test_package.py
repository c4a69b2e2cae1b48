"""Installation-level behaviour: nnU-Net version guard, the trainers folder, nnU-Net's trainer lookup."""
import inspect
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

import nnunetv2_scdl
from nnunetv2_scdl._version_check import check_nnunet_version
from nnunetv2_scdl.cli.trainers_path import trainers_dir

REPO_ROOT = Path(__file__).resolve().parent.parent
ABSTRACT_BASES = {"nnUNetTrainerSSL", "nnUNetTrainerCoTraining"}  # not trainable, not re-exported


@pytest.mark.parametrize("version", ["2.8.0", "2.8.1", "2.8.10.dev0"])
def test_supported_nnunet_versions_pass(version):
    check_nnunet_version(version)


@pytest.mark.parametrize("version", ["2.7.0", "2.9.0", "3.0"])
def test_unsupported_nnunet_version_fails_with_a_clear_message(version):
    with pytest.raises(ImportError, match=rf"nnunetv2>=2.8,<2.9.*nnunetv2 {version} is installed"):
        check_nnunet_version(version)


def test_trainers_dir_in_a_clone_is_the_repository_folder():
    assert trainers_dir() == REPO_ROOT / "trainers"


def test_trainers_dir_after_a_regular_install(tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(REPO_ROOT)], check=True, capture_output=True)
    printed = subprocess.run([sys.executable, "-c", "from nnunetv2_scdl.cli.trainers_path import main; main()"],
                             cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(target)}, check=True,
                             capture_output=True, text=True).stdout.strip()
    assert Path(printed) == target / "nnunetv2_scdl" / "ext_trainers"
    assert (Path(printed) / "scdl_trainers.py").is_file()


def _package_trainer_classes():
    found = {}
    for module_info in pkgutil.walk_packages(nnunetv2_scdl.__path__, "nnunetv2_scdl."):
        if module_info.name.startswith("nnunetv2_scdl.ext_trainers"):
            continue
        module = __import__(module_info.name, fromlist=["_"])
        for name, obj in inspect.getmembers(module, inspect.isclass):
            if issubclass(obj, nnUNetTrainer) and obj.__module__ == module.__name__:
                found[name] = obj
    return found


def test_every_concrete_trainer_is_found_by_nnunets_lookup(monkeypatch):
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    monkeypatch.setenv("nnUNet_extTrainer", str(trainers_dir()))
    classes = _package_trainer_classes()
    assert "nnUNetTrainerMeanTeacher" in classes and "nnUNetTrainerSupervised_5epochs" in classes
    for name, cls in classes.items():
        if name in ABSTRACT_BASES:
            continue
        # nnU-Net imports trainers/ as top-level modules; the class must still be the package's own object
        assert recursive_find_trainer_class_by_name(name) is cls, name


def test_every_console_script_of_setup_py_resolves_even_when_not_installed(monkeypatch):
    """setup.py is the only list of our console scripts; an uninstalled checkout finds them there."""
    import importlib

    from nnunetv2_scdl.cli import commands

    scripts = commands.source_checkout_console_scripts()
    assert {"nnUNetv2_scdl_demo", "nnUNetv2_scdl_preprocess_unlabeled", "nnUNetv2_scdl_benchmark"} <= set(scripts)
    monkeypatch.setattr(commands, "entry_points", lambda **kwargs: [])  # as if nothing were installed
    for name, target in scripts.items():
        module, function = target.split(":")
        assert callable(getattr(importlib.import_module(module), function)), target
        assert f"from {module} import {function} as f" in commands.console_command(name)[2], name
    with pytest.raises(commands.StepError, match="nnUNetv2_no_such_command"):
        commands.console_command("nnUNetv2_no_such_command")
