"""Reports over seeds and budgets on hand-made runs (no training): trainer summaries, paired differences and the
finding rule, the supervised learning curve and its protocol budget, export and rebuild, the runner's option checks."""
import json
import math
import shlex
import shutil
from pathlib import Path

import numpy as np
import pytest

from nnunetv2_scdl.cli import benchmark, benchmark_report
from nnunetv2_scdl.cli.commands import StepError
from nnunetv2_scdl.evaluation.benchmark_report import REFERENCE_TRAINER
from nnunetv2_scdl.evaluation.benchmark_summary import (load_summary_folder, make_summary, names_hash,
                                                        summary_record)
from nnunetv2_scdl.evaluation.learning_curve import budget_points, protocol_budget, write_learning_curve
from nnunetv2_scdl.evaluation.seed_report import (FINDING_FACTOR, paired_deltas, runs_from_summaries, seed_spread,
                                                  write_seed_report)

MT, SCDL_MT = "nnUNetTrainerMeanTeacher", "nnUNetTrainerSCDL_MT"
DHC, SCDL_DHC = "nnUNetTrainerDHC", "nnUNetTrainerSCDL_DHC"
CLASSES = {"1": "anterior", "2": "posterior"}


def settings(seed, epochs=10, iterations=15, device="cpu"):
    """A benchmark_state.json ``settings`` block."""
    return {"dataset": "Dataset004_Hippocampus", "configuration": "3d_fullres", "plans": "nnUNetPlans_cpu",
            "split": {"file": "/somewhere/splits/Hippocampus_5pct.json", "labeled": ["c1", "c2"],
                      "unlabeled": ["u1", "u2", "u3"], "val": ["v1", "v2"]},
            "epochs": epochs, "iterations_per_epoch": iterations, "val_iterations_per_epoch": 2, "seed": seed,
            "device": device, "tta": False, "paper_protocol": False, "scdl_environment": {}}


def evaluation(anterior, posterior):
    """An evaluation_scdl.json-like dict with two classes; the tail class is ``posterior``."""
    per_class = {"1": {"dice": anterior, "assd_mm": 1.0, "hd95_mm": 3.0},
                 "2": {"dice": posterior, "assd_mm": 2.0, "hd95_mm": 5.0}}
    return {"classes": dict(CLASSES),
            "class_groups": {"rule": "frequency below the median", "head": [1], "tail": [2], "labeled_cases": 2,
                             "voxel_counts": {"1": 10, "2": 5}, "voxel_frequencies": {"1": 0.6, "2": 0.4},
                             "total_voxels": 100},
            "per_case": [{"case": "v1", "original": {}}, {"case": "v2", "original": {}}],
            "summary": {"original": {"per_class": per_class,
                                     "mean": {"dice": (anterior + posterior) / 2, "assd_mm": 1.5, "hd95_mm": 4.0},
                                     "head": {"dice": anterior, "assd_mm": 1.0, "hd95_mm": 3.0},
                                     "tail": {"dice": posterior, "assd_mm": 2.0, "hd95_mm": 5.0},
                                     "case_mean_std": {"dice": 0.05}}}}


def summary(trainer, seed, mean_dice, seconds=600.0, epochs=10, iterations=15, pseudo_dice=None, device="cpu"):
    """A trainer summary whose mean Dice is ``mean_dice`` (anterior 0.1 above, posterior 0.1 below)."""
    return make_summary(trainer, settings(seed, epochs, iterations, device), [f"nnUNetv2_scdl_benchmark --seed {seed}"],
                        evaluation(mean_dice + 0.1, mean_dice - 0.1),
                        {"seconds": seconds, "epochs": epochs, "pseudo_dice": pseudo_dice})


def tier1(dice):
    """Summaries of three seeds from ``{trainer: [mean Dice of seed 0, 1, 2]}``."""
    return [summary(trainer, seed, value) for trainer, values in dice.items() for seed, value in enumerate(values)]


def test_summary_is_small_and_keeps_what_reports_need():
    pseudo_dice = [[0.0, 0.0], [0.2, None], [0.3, 0.05], [0.4, 0.2], [0.5, 0.3], [0.5, 0.4]]
    made = summary(MT, 1, 0.6, pseudo_dice=pseudo_dice, iterations=15)
    assert made["settings"]["seed"] == 1 and made["settings"]["split"]["file_name"] == "Hippocampus_5pct.json"
    assert made["settings"]["split"]["unlabeled_count"] == 3
    assert made["settings"]["split"]["unlabeled_hash"] == names_hash(["u3", "u1", "u2"])  # order-free
    assert made["cases"] == ["v1", "v2"] and made["training"]["steps"] == 150
    # anterior: learned from epoch 1 (0.2, 0.3, 0.4 with the absent epoch in between not counting); posterior from 3
    assert made["learned"]["by_class"] == {"1": {"epoch": 1, "step": 30}, "2": {"epoch": 3, "step": 60}}
    record = summary_record(made)
    assert record.iterations == 150 and record.iterations_per_epoch == 15 and record.class_dice(2) == pytest.approx(0.5)
    assert len(json.dumps(made)) < 5000
    assert "network_pseudo_dice" not in made["training"] and "by_network" not in made["learned"]


def test_summary_keeps_each_monitored_network_curve():
    student = [[0.0, 0.0], [0.0, 0.0], [0.2, 0.1], [0.3, 0.2], [0.4, 0.3]]
    made = make_summary(MT, settings(0, 5, 15, "cpu"), ["nnUNetv2_scdl_benchmark"], evaluation(0.7, 0.5),
                        {"seconds": 60.0, "epochs": 5, "pseudo_dice": [[0.1, 0.1]] * 5,
                         "network_pseudo_dice": {"student": student}})
    assert made["learned"]["by_network"] == {"student": {"1": {"epoch": 2, "step": 45}, "2": {"epoch": 2, "step": 45}}}
    rows = dict(summary_record(json.loads(json.dumps(made))).learning_curves())
    assert list(rows) == ["MeanTeacher", "MeanTeacher · student"]
    np.testing.assert_allclose(rows["MeanTeacher · student"][1], [0.0, 0.0, 0.2, 0.3, 0.4])


def test_seed_spread_is_the_pooled_sd_of_mean_dice():
    runs = runs_from_summaries(tier1({REFERENCE_TRAINER: [0.50, 0.52, 0.54], MT: [0.60, 0.61, 0.62]}) +
                               [summary(DHC, 0, 0.7)])
    spread, pooled = seed_spread(runs)
    # sd 0.02 and 0.01 with 2 degrees of freedom each; DHC has one seed and no sd
    assert spread == pytest.approx(math.sqrt((0.02 ** 2 + 0.01 ** 2) / 2))
    assert pooled == [REFERENCE_TRAINER, MT]
    assert seed_spread(runs, among=(MT, DHC)) == (pytest.approx(0.01), [MT])
    assert seed_spread(runs_from_summaries([summary(MT, 0, 0.6), summary(REFERENCE_TRAINER, 0, 0.5)])) == (None, [])


def test_paired_deltas_sign_agreement_and_finding_rule():
    runs = runs_from_summaries(tier1({REFERENCE_TRAINER: [0.50, 0.52, 0.54], MT: [0.60, 0.61, 0.62],
                                      SCDL_MT: [0.61, 0.60, 0.64]}))
    spread, trainers = seed_spread(runs)
    deltas = {(d["minuend"], d["subtrahend"]): d for d in paired_deltas(runs, spread, trainers)}
    assert list(deltas) == [(SCDL_MT, MT), (MT, REFERENCE_TRAINER), (SCDL_MT, REFERENCE_TRAINER)]
    scdl = deltas[SCDL_MT, MT]
    assert scdl["seeds"] == [0, 1, 2]
    assert [round(v, 6) for v in scdl["delta_per_seed"].values()] == [0.01, -0.01, 0.02]
    assert scdl["mean_delta"] == pytest.approx(0.02 / 3) and scdl["sign_agrees"] is False
    # both trainers have three seeds: s pools their own sds (0.01 and sd(0.61, 0.60, 0.64) = 0.0208)
    own = math.sqrt((0.01 ** 2 + np.std([0.61, 0.60, 0.64], ddof=1) ** 2) / 2)
    assert scdl["spread"] == pytest.approx(own) and scdl["spread_trainers"] == [MT, SCDL_MT]
    assert scdl["threshold"] == pytest.approx(FINDING_FACTOR * own) and scdl["finding"] is False
    host = deltas[MT, REFERENCE_TRAINER]
    assert host["spread"] == pytest.approx(math.sqrt((0.02 ** 2 + 0.01 ** 2) / 2))
    assert host["mean_delta"] == pytest.approx(0.09) and host["sign_agrees"] is True and host["finding"] is True
    assert host["mean_delta_head"] == pytest.approx(0.09) and host["mean_delta_tail"] == pytest.approx(0.09)


def test_an_unstable_trainer_widens_only_its_own_comparisons():
    # SCDL_MT's seeds spread by 0.1; the mean teacher's gain over supervised (+0.02) is judged by their own sd 0.005
    runs = runs_from_summaries(tier1({REFERENCE_TRAINER: [0.500, 0.505, 0.510], MT: [0.520, 0.525, 0.530],
                                      SCDL_MT: [0.60, 0.70, 0.50]}))
    spread, trainers = seed_spread(runs)
    assert FINDING_FACTOR * spread > 0.02  # the pool over all three trainers would hide it
    deltas = {(d["minuend"], d["subtrahend"]): d for d in paired_deltas(runs, spread, trainers)}
    host = deltas[MT, REFERENCE_TRAINER]
    assert host["spread"] == pytest.approx(0.005) and host["finding"] is True
    assert deltas[SCDL_MT, MT]["spread"] == pytest.approx(math.sqrt((0.1 ** 2 + 0.005 ** 2) / 2))


def test_one_paired_seed_uses_the_pooled_spread_and_the_rule_is_strict():
    runs = runs_from_summaries(tier1({REFERENCE_TRAINER: [0.50, 0.52, 0.54]}) + [summary(MT, 0, 0.6)])
    (delta,) = paired_deltas(runs, 0.05, [REFERENCE_TRAINER])
    assert delta["spread"] == 0.05 and delta["spread_trainers"] == [REFERENCE_TRAINER]
    assert delta["mean_delta"] == pytest.approx(0.1) and delta["needs_seed"] is False
    # a mean difference of exactly 2 s is not a finding
    assert paired_deltas(runs, 0.1 / FINDING_FACTOR, [REFERENCE_TRAINER])[0]["finding"] is False
    assert paired_deltas(runs, 0.1 / FINDING_FACTOR * 0.999, [REFERENCE_TRAINER])[0]["finding"] is True
    assert paired_deltas(runs, 0.11, [REFERENCE_TRAINER])[0]["needs_seed"] is True


def test_one_seed_claims_no_finding(tmp_path):
    summaries = [summary(REFERENCE_TRAINER, 0, 0.5), summary(MT, 0, 0.9)]
    runs = runs_from_summaries(summaries)
    (delta,) = paired_deltas(runs, None)
    assert delta["finding"] is None and delta["sign_agrees"] is None and delta["mean_delta"] == pytest.approx(0.4)
    markdown = write_seed_report(summaries, tmp_path).read_text()
    assert "no difference can be claimed as a finding" in markdown
    assert "none claimable (no seed spread)" in markdown and "| yes (2s" not in markdown


def table(markdown, heading):
    """The rows of the first table after ``heading``: {first cell: other cells}."""
    lines = []
    for line in markdown.split(heading, 1)[1].splitlines():
        if line.startswith("|"):
            lines.append(line)
        elif lines:
            break
    return {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]] for line in lines[2:]}


def test_merged_report_with_fewer_seeds_for_tier_two(tmp_path):
    pseudo_dice = [[0.0, 0.0], [0.3, 0.0], [0.4, 0.0], [0.5, 0.2], [0.5, 0.3], [0.6, 0.3]]
    summaries = tier1({REFERENCE_TRAINER: [0.50, 0.52, 0.54], MT: [0.60, 0.61, 0.62], SCDL_MT: [0.65, 0.66, 0.67]})
    summaries += [summary(DHC, 0, 0.70), summary(SCDL_DHC, 0, 0.705, pseudo_dice=pseudo_dice, seconds=1200)]
    markdown = write_seed_report(summaries, tmp_path, sources=["a", "b"]).read_text()
    rows = table(markdown, "## Summary over seeds")
    assert rows["Supervised"][:2] == ["3", "52.0 ± 2.0"]
    assert rows["DHC"][:2] == ["1", "70.0"]  # one seed: n = 1, no ±
    assert rows["SCDL_DHC"][-2:] == ["20.0", "+20.5"]  # minutes; Δ against supervised over the one paired seed
    per_class = table(markdown, "## Per-class Dice % over seeds")
    assert per_class["SCDL_MT"] == ["3", "76.0 ± 1.0", "56.0 ± 1.0"]
    assert per_class["SCDL_DHC"] == ["1", "**80.5**", "**60.5**"]  # the best mean of each class in bold
    deltas = table(markdown, "## Paired differences of mean Dice")
    spread = math.sqrt((0.02 ** 2 + 0.01 ** 2 + 0.01 ** 2) / 3)
    assert deltas["SCDL_MT − MeanTeacher"][:4] == ["3", "s0: +5.0, s1: +5.0, s2: +5.0", "+5.0", "+5.0"]
    # both have three seeds (sd 0.01 each): judged by their own spread
    assert deltas["SCDL_MT − MeanTeacher"][-2:] == ["yes", "yes (2s = 2.0, s of these two)"]
    # tier 2: one paired seed, |Δ| = 0.5 points < s: not a finding, and it needs another seed
    assert deltas["SCDL_DHC − DHC"][-2:] == ["n/a (1 seed)",
                                             f"no (2s = {200 * spread:.1f}); add a seed (Δ within ±s)"]
    assert f"s = {100 * spread:.2f} points" in markdown and "exceeds 2 × the seed-to-seed spread" in markdown
    assert report_comparison(tmp_path, SCDL_DHC, DHC)["spread"] == pytest.approx(spread)
    learned = table(markdown, "## When each class was learned")
    assert learned == {"SCDL_DHC": ["0", "30 (1)", "60 (3)"]}  # step (epoch), 15 iterations per epoch
    report = json.loads((tmp_path / "benchmark.json").read_text())
    assert report["trainers"][DHC]["mean_dice"]["n"] == 1 and report["seeds"] == [0, 1, 2]
    assert report["seed_spread"]["value"] == pytest.approx(spread)
    for name in ("benchmark_dice_per_class.png", "benchmark_paired_delta.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"


def report_comparison(folder, minuend, subtrahend) -> dict:
    report = json.loads((folder / "benchmark.json").read_text())
    return next(c for c in report["comparisons"] if (c["minuend"], c["subtrahend"]) == (minuend, subtrahend))


def test_merge_refuses_duplicates_and_other_settings(tmp_path):
    with pytest.raises(ValueError, match="given twice"):
        write_seed_report([summary(MT, 0, 0.5), summary(MT, 0, 0.6)], tmp_path)
    with pytest.raises(ValueError, match="differ in epochs"):
        write_seed_report([summary(MT, 0, 0.5), summary(MT, 1, 0.6, epochs=20)], tmp_path)
    # another device is allowed (a seed added on a GPU), and said
    markdown = write_seed_report([summary(MT, 0, 0.5), summary(MT, 1, 0.6, device="cuda")], tmp_path).read_text()
    assert "Device: cpu, cuda (training times are comparable only within one device)" in markdown


def curve(values, seeds=(0,)):
    """Supervised summaries at 600, 1200, ... steps (15 per epoch) with the given mean Dice per budget."""
    return [summary(REFERENCE_TRAINER, seed, value + 0.002 * seed, epochs=600 * 2 ** index // 15)
            for index, value in enumerate(values) for seed in seeds]


def test_protocol_budget_rule():
    decision = protocol_budget(budget_points(curve([0.40, 0.70, 0.705, 0.70])))
    assert decision["budget"] == 1200 and decision["next"] is None
    assert [round(d["delta"], 6) for d in decision["doublings"]] == [0.3, 0.005, -0.005]
    decision = protocol_budget(budget_points(curve([0.40, 0.70, 0.72])))
    assert decision["budget"] is None and decision["next"] == 4800
    # a change of exactly the tolerance does not qualify (0.25: exact in binary); a drop counts by its size
    exact = [{"steps": 600, "mean_dice": 0.5}, {"steps": 1200, "mean_dice": 0.75}]
    assert protocol_budget(exact, tolerance=0.25)["budget"] is None
    assert protocol_budget(exact, tolerance=0.2501)["budget"] == 600
    assert protocol_budget(budget_points(curve([0.70, 0.695])))["budget"] == 600
    # budgets that are not doublings of each other give no decision
    odd = [summary(REFERENCE_TRAINER, 0, 0.5, epochs=40), summary(REFERENCE_TRAINER, 0, 0.5, epochs=60)]
    assert protocol_budget(budget_points(odd)) == {"budget": None, "tolerance": 0.01, "doublings": [], "next": 1800}


def test_learning_curve_report(tmp_path):
    summaries = curve([0.40, 0.70, 0.705], seeds=(0, 1)) + [summary(MT, 0, 0.9)]  # other trainers are ignored
    markdown = write_learning_curve(summaries, tmp_path, pending=["steps_4800"]).read_text()
    assert "**Protocol budget: 1200 steps.** Doubling it to 2400 steps changed the validation mean Dice by +0.5" \
        in markdown
    rows = table(markdown, "## Dice by budget")
    assert rows["600"][:3] == ["40 × 15", "2", "40.1 ± 0.1"] and rows["600"][-1] == "+30.0"
    assert rows["2400"][-1] == "—"
    assert table(markdown, "## Per-class Dice % by budget")["1200"] == ["80.1 ± 0.1", "60.1 ± 0.1"]
    assert "Not finished yet: `steps_4800`" in markdown
    report = json.loads((tmp_path / "learning_curve.json").read_text())
    assert [b["steps"] for b in report["budgets"]] == [600, 1200, 2400] and report["protocol"]["budget"] == 1200
    assert (tmp_path / "learning_curve.png").read_bytes()[:4] == b"\x89PNG"
    markdown = write_learning_curve(curve([0.40, 0.70]), tmp_path).read_text()
    assert "**No protocol budget yet:** every measured doubling changed the validation mean Dice by 1 point or more " \
           "(600 → 1200: +30.0). Next: train the supervised reference at 2400 steps" in markdown
    assert "Each budget has one seed" in markdown
    with pytest.raises(ValueError, match="differ in plans"):
        other = summary(REFERENCE_TRAINER, 0, 0.5, epochs=80)
        other["settings"]["plans"] = "nnUNetPlans_cpu_half"
        budget_points(curve([0.4]) + [other])


def fake_run_folder(folder, seed, trainers, epochs=10, unfinished=()):
    """A benchmark folder as the runner leaves it, minus models and predictions: state and evaluations."""
    state = {"settings": settings(seed, epochs), "commands": [f"nnUNetv2_scdl_benchmark --seed {seed}"], "trainers": {}}
    for trainer, dice in trainers.items():
        (folder / "predictions" / trainer).mkdir(parents=True)
        (folder / "predictions" / trainer / "evaluation_scdl.json").write_text(
            json.dumps(evaluation(dice + 0.1, dice - 0.1)))
        state["trainers"][trainer] = {"training": {"seconds": 60.0, "epochs": epochs, "pseudo_dice": None},
                                      "predicted": True, "evaluated": True}
    for trainer in unfinished:
        state["trainers"][trainer] = {}
    (folder / benchmark.STATE_FILE).write_text(json.dumps(state))


def test_export_and_rebuild_round_trip(tmp_path):
    """A multi-seed folder's report equals the one rebuilt from its exported summaries alone."""
    bench = tmp_path / "bench"
    for seed, values in enumerate([(0.50, 0.60, 0.66), (0.52, 0.61, 0.64)]):
        (bench / f"seed_{seed}").mkdir(parents=True)
        fake_run_folder(bench / f"seed_{seed}", seed, dict(zip((REFERENCE_TRAINER, MT, SCDL_MT), values)),
                        unfinished=[DHC] if seed else [])
    assert benchmark_report.main([str(bench)]) == 0
    exported = tmp_path / "docs" / "results" / "hippocampus"
    assert benchmark_report.main([str(bench), "--export", str(exported)]) == 0
    files = sorted(p.relative_to(exported).as_posix() for p in exported.rglob("*.json"))
    assert files == [f"seed_{s}/{t}.json" for s in (0, 1) for t in sorted((MT, SCDL_MT, REFERENCE_TRAINER))]
    assert max(p.stat().st_size for p in exported.rglob("*.json")) < 5000
    assert benchmark_report.main([str(exported)]) == 0  # report next to the summaries

    def body(folder):  # the tables; the header names the sources
        return (folder / "benchmark.md").read_text().split("## Summary over seeds")[1]

    assert body(exported) == body(bench).split("\nNot finished yet")[0]
    assert f"Not finished yet (left out): {bench / 'seed_1'}: {DHC}" in (bench / "benchmark.md").read_text()
    original, rebuilt = (json.loads((f / "benchmark.json").read_text()) for f in (bench, exported))
    assert original == rebuilt
    assert len(load_summary_folder(exported)) == 6


def test_report_command_learning_curve_from_existing_folders(tmp_path, capsys):
    root = tmp_path / "lc"
    for steps, dice in ((600, 0.40), (1200, 0.70), (2400, 0.705)):
        (root / f"steps_{steps:04d}").mkdir(parents=True)
        fake_run_folder(root / f"steps_{steps:04d}", 0, {REFERENCE_TRAINER: dice}, epochs=steps // 15)
    (root / "steps_4800").mkdir()  # started, nothing written yet
    assert benchmark_report.main([str(root)]) == 0
    markdown = (root / "learning_curve.md").read_text()
    assert "**Protocol budget: 1200 steps.**" in markdown and f"`{root / 'steps_4800'}: not started`" in markdown
    # the budget folders, given one by one, need --learning-curve; a single-seed folder keeps its own report
    folders = [str(p) for p in sorted(root.glob("steps_*"))[:3]]
    assert benchmark_report.main(folders + ["-o", str(tmp_path / "merged")]) == 1
    assert "different budgets (600, 1200, 2400 steps). Pass --learning-curve" in capsys.readouterr().err
    assert benchmark_report.main(folders + ["-o", str(tmp_path / "lc2"), "--learning-curve"]) == 0
    assert benchmark_report.main(folders[:1]) == 1
    assert "single-seed benchmark folder" in capsys.readouterr().err


RUNNING = ("-d 4 --split /work/shared/data/splits/Dataset004_Hippocampus_5pct.json -p nnUNetPlans_cpu --epochs 40 "
           "--iterations-per-epoch 15 --trainers nnUNetTrainerSupervised --seed 0 -o "
           "/work/bench/lc/hippocampus_5pct_quarter/steps_0600 --no-paper-protocol")


def test_learning_curve_folders_get_the_plain_command():
    """Each budget folder records the plain command that would have made it, so a folder started by that command
    (this one is the one the benchmark machine runs) is resumed with the same command list."""
    args = benchmark.build_parser().parse_args(shlex.split(
        "-d 4 --split /work/shared/data/splits/Dataset004_Hippocampus_5pct.json -p nnUNetPlans_cpu "
        "--learning-curve 2400 600 1200 --iterations-per-epoch 15 --seed 0 -o /work/bench/lc/hippocampus_5pct_quarter "
        "--no-paper-protocol"))
    benchmark.check_options(args)
    assert args.learning_curve == [600, 1200, 2400]
    folder = benchmark.steps_folder(Path("/work/bench/lc/hippocampus_5pct_quarter"), 600)
    assert benchmark.folder_command(args, 40, 0, folder) == "nnUNetv2_scdl_benchmark " + RUNNING
    single = benchmark.single_run_args(args, 40, 0, folder)
    plain = benchmark.build_parser().parse_args(shlex.split(RUNNING))
    plain.seed = plain.seed[0]
    assert {k: v for k, v in vars(single).items() if k not in ("learning_curve", "summaries")} == \
        {k: v for k, v in vars(plain).items() if k not in ("learning_curve", "summaries")}


@pytest.mark.parametrize("options, message", [
    ("--learning-curve 600 1000 --iterations-per-epoch 15", "1000 step(s) not a positive multiple of "
                                                           "--iterations-per-epoch 15"),
    ("--learning-curve 600 --epochs 40 --iterations-per-epoch 15", "leave out --epochs"),
    ("--learning-curve 600 --trainers nnUNetTrainerDHC --iterations-per-epoch 15", "trains only the supervised"),
    ("--iterations-per-epoch 15", "--epochs is required"),
    ("--learning-curve 600 --no-reference --iterations-per-epoch 15", "leave out --no-reference"),
    ("--epochs 2 --iterations-per-epoch 15 --no-reference --trainers nnUNetTrainerSupervised", "leaves no trainer"),
])
def test_option_errors(options, message, tmp_path, capsys):
    argv = ["-d", "4", "--split", "split.json", "-o", str(tmp_path / "out")] + options.split()
    assert benchmark.main(argv) == 1
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # refused before anything is written


def test_no_reference_runs_only_the_named_trainers_and_is_recorded():
    """Two invocations with different --trainers can run at once into their own folders, the reference row coming
    from a third; the seed folders record --no-reference, so resuming one does not train the reference."""
    argv = ["-d", "4", "--split", "s.json", "-o", "out", "--epochs", "2", "--iterations-per-epoch", "1",
            "--trainers", MT, MT, DHC]
    args = benchmark.build_parser().parse_args(argv)
    assert benchmark.trainers_to_run(args) == [REFERENCE_TRAINER, MT, DHC]
    args = benchmark.build_parser().parse_args(argv + ["--no-reference"])
    benchmark.check_options(args)
    assert benchmark.trainers_to_run(args) == [MT, DHC]
    command = benchmark.folder_command(args, 2, 0, Path("out/seed_0"))
    assert command.endswith(f"--trainers {MT} {MT} {DHC} --no-reference --seed 0 -o out/seed_0")
    assert benchmark.trainers_to_run(benchmark.build_parser().parse_args(shlex.split(command)[1:])) == [MT, DHC]


def test_several_seeds_refuse_a_single_seed_folder(tmp_path):
    fake_run_folder(tmp_path, 0, {REFERENCE_TRAINER: 0.5})
    args = benchmark.build_parser().parse_args(["-d", "4", "--split", "s.json", "-o", str(tmp_path), "--epochs", "2",
                                                "--iterations-per-epoch", "1", "--seed", "0", "1"])
    with pytest.raises(StepError, match="single-seed benchmark folder"):
        benchmark.uses_seed_folders(args, tmp_path)
    args.seed = [0]
    assert not benchmark.uses_seed_folders(args, tmp_path)  # one seed resumes the folder itself
    other = tmp_path / "multi"
    (other / "seed_0").mkdir(parents=True)
    assert benchmark.uses_seed_folders(args, other)  # a second invocation (tier 2) goes into seed_0


def test_seeds_and_budgets_go_into_ordinary_folders(tmp_path, monkeypatch):
    """The orchestration, with each single-seed run replaced by a folder as the runner leaves it: several seeds into
    seed_<n> with a report over them, a second invocation adding a trainer to seed_0, a learning curve into
    steps_<steps> with its report."""
    runs, trained = [], {}

    def fake_run(args, command):
        runs.append((args.output, args.seed, args.epochs, list(args.trainers), command))
        shutil.rmtree(args.output, ignore_errors=True)
        args.output.mkdir(parents=True)
        folder = trained.setdefault(args.output, {})  # the reference row is always added; trainers accumulate
        for trainer in [REFERENCE_TRAINER] + args.trainers:
            folder.setdefault(trainer, 0.5 + 0.01 * args.seed + 0.0001 * args.epochs + 0.1 * len(folder))
        fake_run_folder(args.output, args.seed, folder, epochs=args.epochs)

    monkeypatch.setattr(benchmark, "run_benchmark", fake_run)
    common = ["-d", "4", "--split", "s.json", "--iterations-per-epoch", "15"]
    output = tmp_path / "tier1"
    assert benchmark.main(common + ["--epochs", "10", "--seed", "0", "1", "--trainers", MT, "-o", str(output)]) == 0
    assert [(r[0], r[1], r[3]) for r in runs] == [(output / "seed_0", 0, [MT]), (output / "seed_1", 1, [MT])]
    assert runs[1][4] == (f"nnUNetv2_scdl_benchmark -d 4 --split s.json --epochs 10 --iterations-per-epoch 15 "
                          f"--trainers {MT} --seed 1 -o {output / 'seed_1'}")
    report = json.loads((output / "benchmark.json").read_text())
    assert report["trainers"][MT]["seeds"] == [0, 1]
    # tier 2 with one seed: into seed_0 of the same folder, and the report shows n = 1 for it
    assert benchmark.main(common + ["--epochs", "10", "--seed", "0", "--trainers", DHC, "-o", str(output)]) == 0
    assert runs[-1][0] == output / "seed_0"
    report = json.loads((output / "benchmark.json").read_text())
    assert report["trainers"][DHC]["seeds"] == [0] and report["trainers"][MT]["seeds"] == [0, 1]

    runs.clear()
    curve_folder = tmp_path / "curve"
    assert benchmark.main(common + ["--learning-curve", "300", "150", "-o", str(curve_folder)]) == 0
    assert [(r[0].name, r[1], r[2], r[3]) for r in runs] == [("steps_0150", 0, 10, [REFERENCE_TRAINER]),
                                                            ("steps_0300", 0, 20, [REFERENCE_TRAINER])]
    report = json.loads((curve_folder / "learning_curve.json").read_text())
    assert [(b["steps"], b["epochs"]) for b in report["budgets"]] == [(150, 10), (300, 20)]
    assert report["protocol"]["budget"] == 150  # doubling to 20 epochs adds 0.1 point
