"""The geometry of SCDL's class proxies: cosines between proxy means, logged every epoch by every SCDL trainer and
read from checkpoints by ``nnUNetv2_scdl_proxies``."""
import json
import math

import numpy as np
import pytest
import torch
from conftest import load_benchmark_script, make_trainer

from nnunetv2_scdl.cli.proxies import main as proxies_main
from nnunetv2_scdl.scdl.proxies import proxy_mean_cosines, proxy_separation
from nnunetv2_scdl.training.scdl_addon import SCDL_PROXY_LOG_KEYS
from nnunetv2_scdl.training.ssl_base import CHECKPOINT_KEY


def softplus_inverse(sigma: float) -> float:
    return math.log(math.expm1(sigma))


def test_separation_by_hand():
    # background along x, class 1 at 60° from it, class 2 opposite to background
    mu = torch.tensor([[2.0, 0.0], [1.0, math.sqrt(3.0)], [-3.0, 0.0]])
    rho = torch.tensor([[softplus_inverse(0.1)] * 2, [softplus_inverse(0.3)] * 2, [softplus_inverse(0.2)] * 2])
    cosines = proxy_mean_cosines(mu)
    assert torch.allclose(cosines, torch.tensor([[1.0, 0.5, -1.0], [0.5, 1.0, -0.5], [-1.0, -0.5, 1.0]]), atol=1e-6)
    separation = proxy_separation(mu, rho)
    assert separation["max_cosine"] == pytest.approx(0.5)
    assert separation["max_pair"] == (0, 1)
    assert separation["sigma_mean"] == pytest.approx(0.2)
    assert (separation["sigma_min"], separation["sigma_max"]) == pytest.approx((0.1, 0.3))
    assert separation["norm_mean"] == pytest.approx(7.0 / 3.0)


def test_separation_rejects_bad_shapes():
    with pytest.raises(ValueError, match=r"\[C, D\]"):
        proxy_mean_cosines(torch.zeros(1, 4))
    with pytest.raises(ValueError, match="rho must have the shape"):
        proxy_separation(torch.randn(3, 4), torch.randn(3, 5))


def set_proxies(proxies, mu, sigma: float) -> None:
    with torch.no_grad():
        proxies.mu.copy_(mu)
        proxies.rho.fill_(softplus_inverse(sigma))


def fake_train_outputs(trainer, steps: int = 2):
    return [{**{name: 0.5 for name in trainer.logged_terms}, "loss": np.float32(1.0), "data_wait_s": 0.0,
             "step_s": 1.0} for _ in range(steps)]


def test_co_training_logs_the_closest_pair_over_both_networks_and_the_mean_sigma(phantom_with_unlabeled):
    from nnunetv2_scdl.training.ga_cps import nnUNetTrainerSCDL_GACPS

    trainer = make_trainer(phantom_with_unlabeled, nnUNetTrainerSCDL_GACPS)
    trainer.initialize()
    proxies_a = trainer.network.net_a.scdl.class_proxies
    proxies_b = trainer.network.net_b.scdl.class_proxies
    num_classes, dim = proxies_a.mu.shape
    assert num_classes >= 3
    separated = torch.eye(num_classes, dim)                     # A: orthogonal means, max cosine 0
    close = torch.eye(num_classes, dim)
    close[2] = torch.nn.functional.normalize(close[1] + 0.5 * close[2], dim=0)  # B: cos(μ_1, μ_2) = 2 / √5
    set_proxies(proxies_a, separated, 0.05)
    set_proxies(proxies_b, close, 0.15)

    trainer.on_train_epoch_end(fake_train_outputs(trainer))
    logged = trainer.logger.local_logger.my_fantastic_logging
    assert set(SCDL_PROXY_LOG_KEYS) <= set(logged)
    assert logged["scdl_proxy_max_cosine"][0] == pytest.approx(2 / math.sqrt(5), abs=1e-5)
    assert logged["scdl_proxy_sigma"][0] == pytest.approx(0.1, abs=1e-5)


def proxy_state(mu, sigma: float, prefix: str = "scdl.") -> dict:
    return {f"{prefix}class_proxies.mu": mu, f"{prefix}class_proxies.rho": torch.full_like(mu, softplus_inverse(sigma)),
            "decoder.seg_layers.0.weight": torch.zeros(3, 8, 1, 1, 1)}


def write_model_folder(root, checkpoints: dict):
    fold = root / "nnUNetTrainerSCDL_MT__nnUNetPlans__3d_fullres" / "fold_0"
    fold.mkdir(parents=True)
    (fold.parent / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "anterior": 1,
                                                                     "posterior": 2}}))
    for name, checkpoint in checkpoints.items():
        torch.save(checkpoint, fold / name)
    return fold


def test_cli_reads_the_final_checkpoint_of_a_folder_and_the_student_weights(tmp_path, capsys):
    teacher = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])    # closest: background with either (cos 0)
    student = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])     # closest: anterior–posterior (cos 0.8)
    final = {"current_epoch": 320, "network_weights": proxy_state(teacher, 0.02),
             CHECKPOINT_KEY: {"training_network_weights": proxy_state(student, 0.04)}}
    latest = {"current_epoch": 200, "network_weights": proxy_state(-teacher, 0.02)}
    fold = write_model_folder(tmp_path, {"checkpoint_final.pth": final, "checkpoint_latest.pth": latest})

    assert proxies_main([str(fold), "--all-pairs"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if "checkpoint_" in line]
    assert len(rows) == 2 and all("checkpoint_final.pth" in row and "| 320 |" in row for row in rows)
    inference, training = (next(r for r in rows if f"| {label} |" in r) for label in ("inference", "training"))
    assert "| +0.800 |" not in inference and "anterior–posterior | +0.800 |" in training
    assert "0.0400 (0.0400–0.0400)" in training
    # --all-pairs: background–anterior, background–posterior, anterior–posterior
    assert training.rstrip(" |").endswith("+0.000 | +0.600 | +0.800")


def test_cli_refuses_checkpoints_without_proxies_and_missing_paths(tmp_path, capsys):
    plain = tmp_path / "plain.pth"
    torch.save({"network_weights": {"decoder.seg_layers.0.weight": torch.zeros(3, 8, 1, 1, 1)}}, plain)
    assert proxies_main([str(plain)]) == 1
    assert "no SCDL class proxies" in capsys.readouterr().err
    assert proxies_main([str(tmp_path / "missing")]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert proxies_main([str(tmp_path)]) == 1
    assert "holds neither checkpoint_final.pth nor checkpoint_latest.pth" in capsys.readouterr().err
    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint")
    assert proxies_main([str(text)]) == 1
    assert "cannot be read as a checkpoint" in capsys.readouterr().err
    two_classes = tmp_path / "two.pth"
    torch.save({"network_weights": proxy_state(torch.eye(2), 0.02)}, two_classes)
    three_classes = tmp_path / "three.pth"
    torch.save({"network_weights": proxy_state(torch.eye(3), 0.02)}, three_classes)
    assert proxies_main([str(two_classes), str(three_classes)]) == 0  # without --all-pairs the columns agree
    capsys.readouterr()
    assert proxies_main([str(two_classes), str(three_classes), "--all-pairs"]) == 1
    assert "needs checkpoints with the same classes" in capsys.readouterr().err


def test_token_class_mix_by_hand():
    module = load_benchmark_script("token_class_mix")
    # a 5 × 2 × 2 case, stride 2 → three tokens, the last padded with a background slice:
    # token 0: all class 1; token 1: half class 1, half class 2; token 2: a quarter class 2
    labels = torch.zeros(5, 2, 2, dtype=torch.int64)
    labels[0:2] = 1
    labels[2, :, :] = 1
    labels[3, :, :] = 2
    labels[4, 0, :] = 2
    mix = module.foreground_mix(labels, num_classes=3, stride=2)
    # class 1: w = (1, 0.5, 0); negatives 1 − w = (0, 0.5, 1) hold class 2 with (0, 0.5, 0.25)
    assert mix[1] == pytest.approx(((0.5 * 0.5 + 1 * 0.25) / 1.5, 0.5 / 1.5))
    # class 2: w = (0, 0.5, 0.25); negatives (1, 0.5, 0.75) hold class 1 with (1, 0.5, 0)
    assert mix[2] == pytest.approx(((1 * 1 + 0.5 * 0.5) / 2.25, 0.5 / 0.75))


def test_mean_teacher_logs_the_student_and_its_checkpoint_holds_teacher_and_student(phantom_with_unlabeled, tmp_path):
    from nnunetv2_scdl.evaluation.proxy_geometry import proxy_states
    from nnunetv2_scdl.training.scdl_mean_teacher import nnUNetTrainerSCDL_MT

    trainer = make_trainer(phantom_with_unlabeled, nnUNetTrainerSCDL_MT)
    trainer.initialize()
    student = trainer.network.scdl.class_proxies
    num_classes, dim = student.mu.shape
    collapsed = torch.zeros(num_classes, dim)
    collapsed[:, 0] = 1.0  # every class along one direction: cosine 1
    set_proxies(student, collapsed, 0.3)
    trainer.on_train_epoch_end(fake_train_outputs(trainer))
    logged = trainer.logger.local_logger.my_fantastic_logging
    assert logged["scdl_proxy_max_cosine"][0] == pytest.approx(1.0)  # the student's, not the teacher's
    assert logged["scdl_proxy_sigma"][0] == pytest.approx(0.3, abs=1e-5)

    trainer.save_checkpoint(str(tmp_path / "checkpoint.pth"))
    states = {label: (module, mu) for label, module, mu, _ in
              proxy_states(torch.load(tmp_path / "checkpoint.pth", map_location="cpu", weights_only=False))}
    assert set(states) == {"inference", "training"} and states["training"][0] == "scdl"
    torch.testing.assert_close(states["training"][1], collapsed)
    torch.testing.assert_close(states["inference"][1], trainer.teacher.module.scdl.class_proxies.mu.detach())
    assert not torch.allclose(states["inference"][1], collapsed)


@pytest.mark.parametrize("token_source", ["decoder", "encoder"])
def test_anchor_geometry_uses_the_anchors_sac_trains_on(token_source):
    from test_scdl_unet import ANISO, labeled_batch, make_net

    module = load_benchmark_script("scdl_anchor_geometry")
    _, net = make_net(ANISO, token_source=token_source)
    x, target = labeled_batch(ANISO)
    target[1] = 0  # image 1 holds no foreground, image 2 only class 2: absent rows must not enter the anchors
    target[2][target[2] == 1] = 2
    geometry = module.anchor_geometry(net, x, target)
    assert geometry["present"].tolist() == [True, True, True]
    # SAC on the same batch is mean_c (1 − cos(anchor_c, μ_c)): the script's anchors are SAC's
    with torch.no_grad():
        _, aux = net(x, return_scdl=True)
        sac = net.scdl_loss_terms(aux, target, n_labeled=3)["sac"]
    assert (1 - geometry["anchor_proxy_cosines"]).mean().item() == pytest.approx(sac.item(), rel=1e-5)
    anchors = geometry["anchor_cosines"]
    assert torch.allclose(anchors, anchors.T) and torch.allclose(anchors.diagonal(), torch.ones(3), atol=1e-5)
    assert torch.allclose(geometry["proxy_cosines"], proxy_mean_cosines(net.scdl.class_proxies.mu), atol=1e-6)
    assert 0 < geometry["token_cone"].item() <= 1 + 1e-6
    assert [name for name, _ in module.scdl_unets(torch.nn.Sequential(net))] == ["0"]


@pytest.mark.parametrize("options", [{}, {"cdba_grad_to_tokens": False}, {"prior_grad_to_proxies": False}])
def test_gradient_conflict_measures_each_loss_on_each_group(options):
    """The script's gradients follow the graph: SAC reaches only μ, CDBA the host network unless its tokens are
    detached, and the segmentation loss μ through the priors unless they read detached proxies."""
    from test_scdl_unet import ANISO, labeled_batch, make_net, randomise_projections

    module = load_benchmark_script("scdl_gradient_conflict")
    _, net = make_net(ANISO, **options)
    randomise_projections(net)  # zero-initialised projections would pass no gradient through the priors
    x, target = labeled_batch(ANISO)

    def cross_entropy(logits, labels):
        return torch.nn.functional.cross_entropy(logits, labels[:, 0])

    torch.manual_seed(0)
    result = module.gradient_conflict(net, x, target, cross_entropy, cdba_weight=0.1, sac_weight=0.1, repeats=2)
    assert set(result) == {"host", "mlp", "mu"}
    assert result["host"]["sac"] == 0 and result["mlp"]["sac"] == 0 and result["mu"]["sac"] > 0
    assert result["mlp"]["cdba"] > 0 and result["mu"]["cdba"] > 0 and result["host"]["segmentation"] > 0
    assert (result["host"]["cdba"] == 0) == (options.get("cdba_grad_to_tokens") is False)
    assert (result["mu"]["segmentation"] == 0) == (options.get("prior_grad_to_proxies") is False)
    for group in result.values():
        assert -1 - 1e-6 <= group["cos_cdba"] <= 1 + 1e-6


def test_prior_sharpness_recomputes_the_networks_own_priors():
    """At τ_prior = τ_e2p the script's r^dist and r^center are those the network injects; a larger τ spreads the
    class weights, and a very large one makes the priors constant (gain 0)."""
    from test_scdl_unet import ANISO, labeled_batch, make_net

    module = load_benchmark_script("scdl_prior_sharpness")
    _, net = make_net(ANISO)
    x, _ = labeled_batch(ANISO)
    net.eval()
    with torch.no_grad():
        _, aux = net(x, return_scdl=True)
        dim = net.scdl.embed_dim
        dist, centre, alpha, joint = module.class_weighted_priors(net.scdl, aux.scdl.unit_embeddings,
                                                                  net.scdl.tau_e2p)
    torch.testing.assert_close(dist, aux.scdl.priors[..., :dim])
    torch.testing.assert_close(centre, aux.scdl.priors[..., dim:2 * dim])
    torch.testing.assert_close(joint, aux.scdl.log_joint.exp())
    torch.testing.assert_close(alpha.sum(dim=-1), torch.ones(alpha.shape[:2]))
    results = module.prior_sharpness(net, x, [0.05, 1.0, 1e6], repeats=2)
    shares = [results[t]["dist_top_share"] for t in (0.05, 1.0, 1e6)]
    assert shares[0] > shares[1] > shares[2] == pytest.approx(1 / net.num_classes, abs=1e-4)
    assert results[1e6]["dist_gain"] < 1e-3 and results[1e6]["centre_gain"] < 1e-3
    assert results[1.0]["dist_gain"] > 1e-3 and results[1.0]["centre_gain"] > 1e-3
    # a gain is per unit turn of the embedding: in the linear regime it does not depend on the noise's size
    larger = module.prior_sharpness(net, x, [1.0], noise=0.02, repeats=2)[1.0]
    assert larger["dist_gain"] == pytest.approx(results[1.0]["dist_gain"], rel=0.1)
    assert "| 1 |" in module.format_table({"network": results})
