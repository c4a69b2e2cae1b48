"""nnUNetv2_scdl_demo: trainer choice, the checks before anything runs, the printed table; one tiny real run."""
import json

import pytest

from nnunetv2_scdl.cli import demo
from nnunetv2_scdl.cli.commands import external_trainer_path


def test_default_trainers_include_an_scdl_trainer():
    args = demo.build_parser().parse_args([])
    assert args.trainers == ["nnUNetTrainerSupervised", "nnUNetTrainerMeanTeacher", "nnUNetTrainerSCDL_MT"]
    assert demo.unknown_trainers(args.trainers, external_trainer_path()) == []


def test_unknown_trainer_is_named_with_suggestions_before_anything_is_written(tmp_path, capsys):
    workdir = tmp_path / "demo"
    assert demo.main(["--workdir", str(workdir), "--trainers", "nnUNetTrainerMeanTeacher",
                      "nnUNetTrainerSCDL_GACPSS", "NoSuchTrainer"]) == 1
    error = capsys.readouterr().err
    assert "nnUNetTrainerSCDL_GACPSS (did you mean nnUNetTrainerSCDL_GACPS" in error
    assert "NoSuchTrainer" in error and "nnUNetTrainerMeanTeacher" not in error.split("\n", 1)[1]
    assert not workdir.exists()


def test_other_trainers_are_accepted():
    demo.check_trainer_names(["nnUNetTrainerSCDL_GACPS", "nnUNetTrainer"], external_trainer_path())


def test_table_and_the_line_on_what_a_short_run_shows():
    results = {"nnUNetTrainerSupervised": {"per_class": {"large": 0.9, "tiny": 0.0}, "mean": 0.45},
               "nnUNetTrainerSCDL_MT": {"per_class": {"large": 0.8, "tiny": 0.1}, "mean": 0.45}}
    table = demo.results_table(results, ["large", "tiny"])
    assert table.splitlines()[2] == "| nnUNetTrainerSupervised | 0.900 | 0.000 | 0.450 |"
    line = demo.what_a_short_run_shows(7, 9)
    assert "7 x 9" in line and "cannot rank" in line and "\n" not in line


@pytest.mark.slow
def test_tiny_demo_runs_end_to_end_with_an_scdl_trainer(tmp_path, capsys):
    workdir = tmp_path / "demo"
    assert demo.main(["--workdir", str(workdir), "--epochs", "1", "--iterations", "2", "--val-iterations", "1",
                      "--labeled", "5", "--unlabeled", "2", "--test", "1", "--shape", "16", "24", "24",
                      "--trainers", "nnUNetTrainerSupervised", "nnUNetTrainerSCDL_MT", "-np", "1"]) == 0
    printed = capsys.readouterr().out
    summary = json.loads((workdir / "results.json").read_text())
    assert list(summary["dice"]) == ["nnUNetTrainerSupervised", "nnUNetTrainerSCDL_MT"]
    for dice in summary["dice"].values():
        assert set(dice["per_class"]) == {"large", "medium", "tiny"}
    assert demo.what_a_short_run_shows(1, 2) in printed
    assert demo.what_a_short_run_shows(1, 2) in (workdir / "results.md").read_text()
