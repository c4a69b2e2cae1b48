"""SCDL trainers as a family: paired initialisation with their hosts, variants, weight decay, unsupported label setups.

These tests build trainers and networks in-process on the planned phantom's CPU plans (no training).
"""
import pytest
import torch
from conftest import make_trainer

from nnunetv2_scdl.scdl.module import SCDL
from nnunetv2_scdl.training.dhc import nnUNetTrainerDHC, nnUNetTrainerSCDL_DHC
from nnunetv2_scdl.training.ga_cps import nnUNetTrainerGACPS, nnUNetTrainerSCDL_GACPS
from nnunetv2_scdl.training.ga_magicnet import nnUNetTrainerGAMagicNet, nnUNetTrainerSCDL_GAMagicNet
from nnunetv2_scdl.training.generic_ssl import nnUNetTrainerGenericSSL, nnUNetTrainerSCDL_GenericSSL
from nnunetv2_scdl.training.mean_teacher import nnUNetTrainerMeanTeacher
from nnunetv2_scdl.training.registry import ALL_TRAINERS, RELEASED_VARIANT_BASES
from nnunetv2_scdl.training.scdl_mean_teacher import nnUNetTrainerSCDL_MT

HOST_PAIRS = [(nnUNetTrainerMeanTeacher, nnUNetTrainerSCDL_MT), (nnUNetTrainerGACPS, nnUNetTrainerSCDL_GACPS),
              (nnUNetTrainerDHC, nnUNetTrainerSCDL_DHC), (nnUNetTrainerGAMagicNet, nnUNetTrainerSCDL_GAMagicNet),
              (nnUNetTrainerGenericSSL, nnUNetTrainerSCDL_GenericSSL)]


def build_network(dataset, trainer_class, seed: int):
    """The network ``trainer_class`` builds for the phantom's CPU plans, with the global RNG seeded as the trainers'
    ``seed`` hyperparameter does."""
    trainer = make_trainer(dataset, trainer_class)
    torch.manual_seed(seed)
    return trainer_class.build_network_architecture(
        trainer.plans_manager, trainer.configuration_manager, len(trainer.dataset_json["channel_names"]),
        trainer.label_manager.num_segmentation_heads, True)


@pytest.mark.parametrize("host, scdl", HOST_PAIRS, ids=[host.__name__ for host, _ in HOST_PAIRS])
def test_host_and_scdl_variant_start_from_identical_host_weights(host, scdl, planned_phantom):
    host_weights = build_network(planned_phantom, host, seed=0).state_dict()
    scdl_weights = build_network(planned_phantom, scdl, seed=0).state_dict()
    shared = [k for k in scdl_weights if ".scdl." not in f".{k}"]
    # the SCDL network has every host parameter (same keys) plus its own scdl.* ones
    assert sorted(shared) == sorted(host_weights)
    assert len(scdl_weights) > len(shared)
    for key in shared:
        assert torch.equal(host_weights[key], scdl_weights[key]), key
    # and the comparison can fail: another seed gives other host weights
    other = build_network(planned_phantom, host, seed=1).state_dict()
    assert any(not torch.equal(host_weights[k], other[k]) for k in host_weights if host_weights[k].is_floating_point())


def test_the_two_scdls_of_a_co_training_trainer_start_differently(planned_phantom):
    network = build_network(planned_phantom, nnUNetTrainerSCDL_GACPS, seed=0)
    assert not torch.equal(network.net_a.scdl.class_proxies.mu, network.net_b.scdl.class_proxies.mu)
    again = build_network(planned_phantom, nnUNetTrainerSCDL_GACPS, seed=0)
    assert torch.equal(network.net_a.scdl.class_proxies.mu, again.net_a.scdl.class_proxies.mu)


@pytest.mark.parametrize("trainer_class", RELEASED_VARIANT_BASES, ids=lambda c: c.__name__)
def test_paper_and_released_variants_build_their_networks(trainer_class, planned_phantom):
    released_class = ALL_TRAINERS[f"{trainer_class.__name__}_released"]
    assert trainer_class.scdl_variant == "paper" and released_class.scdl_variant == "released"
    for cls in (trainer_class, released_class):
        network = build_network(planned_phantom, cls, seed=0)
        scdl_modules = [m for m in network.modules() if isinstance(m, SCDL)]
        assert scdl_modules and all(m.variant == cls.scdl_variant for m in scdl_modules)
        prior_sites = sum(len(m.prior_projections) for m in scdl_modules)
        expected_mode = cls.scdl_network_options()["prior_mode"]
        assert (prior_sites > 0) == (expected_mode != "none"), (cls.__name__, expected_mode)


@pytest.mark.parametrize("trainer_class", RELEASED_VARIANT_BASES, ids=lambda c: c.__name__)
def test_prior_temperature_class_attribute_reaches_every_scdl_module(trainer_class, planned_phantom):
    assert trainer_class.scdl_prior_temperature is None
    soft = type(f"{trainer_class.__name__}_soft", (trainer_class,), {"scdl_prior_temperature": 1.0})
    for cls, expected in ((trainer_class, None), (soft, 1.0)):
        scdl_modules = [m for m in build_network(planned_phantom, cls, seed=0).modules() if isinstance(m, SCDL)]
        assert scdl_modules and all(m.prior_temperature == expected for m in scdl_modules), cls.__name__


def test_co_training_hosts_inject_priors_in_both_networks_only_in_the_paper_variant(planned_phantom):
    for cls, mode in ((nnUNetTrainerSCDL_GACPS, "decoder"), (nnUNetTrainerSCDL_DHC, "decoder"),
                      (ALL_TRAINERS["nnUNetTrainerSCDL_GACPS_released"], "none"),
                      (ALL_TRAINERS["nnUNetTrainerSCDL_DHC_released"], "none")):
        network = build_network(planned_phantom, cls, seed=0)
        assert network.net_a.prior_mode == network.net_b.prior_mode == mode, cls.__name__


def test_proxy_parameters_are_exempt_from_weight_decay(planned_phantom):
    trainer = make_trainer(planned_phantom, nnUNetTrainerSCDL_GACPS)
    trainer.initialize()
    groups = trainer.optimizer.param_groups
    assert [g["weight_decay"] for g in groups] == [trainer.weight_decay, 0.0]
    exempt = {id(p) for p in groups[1]["params"]}
    for net in (trainer.network.net_a, trainer.network.net_b):
        proxies = net.scdl.class_proxies
        assert {id(proxies.mu), id(proxies.rho), id(net.scdl.sigma_emb)} <= exempt
        assert id(net.scdl.projection.layers[0].weight) not in exempt
    assert sum(len(g["params"]) for g in groups) == len(list(trainer.network.parameters()))
    # a host without SCDL keeps one group, as nnU-Net's optimiser
    host = make_trainer(planned_phantom, nnUNetTrainerGACPS)
    host.initialize()
    assert len(host.optimizer.param_groups) == 1


@pytest.mark.parametrize("labels, message", [
    ({"background": 0}, "at least two label classes"),
    ({"background": 0, "ignore": 1}, "besides the ignore label"),
])
def test_scdl_trainer_refuses_datasets_without_two_classes(labels, message, planned_phantom):
    import json
    dataset_json = json.loads((planned_phantom.preprocessed_folder / "dataset.json").read_text())
    dataset_json["labels"] = labels
    with pytest.raises(ValueError, match=message):
        make_trainer(planned_phantom, nnUNetTrainerSCDL_MT, dataset_json)


def test_scdl_trainer_refuses_region_based_training(planned_phantom):
    import json
    dataset_json = json.loads((planned_phantom.preprocessed_folder / "dataset.json").read_text())
    dataset_json["labels"] = {"background": 0, "whole": [1, 2, 3], "inner": [2, 3]}
    dataset_json["regions_class_order"] = [1, 2]
    with pytest.raises(NotImplementedError, match="region-based"):
        make_trainer(planned_phantom, nnUNetTrainerSCDL_GACPS, dataset_json)


def test_training_log_names_the_scdl_variant(planned_phantom):
    trainer = make_trainer(planned_phantom, ALL_TRAINERS["nnUNetTrainerSCDL_MT_released"])
    report = trainer.hyperparameter_report()
    assert "variant=released" in report and "prior_mode=decoder" in report
