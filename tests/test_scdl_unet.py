"""SCDL on nnU-Net's plan-generated U-Nets: shapes (2d, 3d, anisotropic), DS, priors, determinism, state_dict,
losses through the wrapper, and the predictor's build → strict load → forward path."""
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from dynamic_network_architectures.architectures.unet import PlainConvUNet, ResidualEncoderUNet
from torch import nn

from nnunetv2_scdl.networks.scdl_unet import SCDLUNet, build_scdl_network_from_plans
from nnunetv2_scdl.scdl.tokens import tokens_to_map

SMALL = dict(embed_dim=16, num_samples=4)
ANISO = dict(dim=3, strides=[[1, 1, 1], [2, 2, 2], [2, 2, 2], [1, 2, 2]], patch=(8, 16, 16))
ISO2D = dict(dim=2, strides=[[1, 1], [2, 2], [2, 2], [2, 2]], patch=(16, 24))


def make_base(dim, strides, patch=None, residual=False, deep_supervision=True, num_classes=3, seed=0):
    torch.manual_seed(seed)
    conv = nn.Conv3d if dim == 3 else nn.Conv2d
    norm = nn.InstanceNorm3d if dim == 3 else nn.InstanceNorm2d
    n = len(strides)
    common = dict(input_channels=1, n_stages=n, features_per_stage=[4, 8, 16, 32][:n], conv_op=conv,
                  kernel_sizes=3, strides=strides, num_classes=num_classes, n_conv_per_stage_decoder=1,
                  conv_bias=True, norm_op=norm, norm_op_kwargs={"eps": 1e-5, "affine": True}, nonlin=nn.LeakyReLU,
                  nonlin_kwargs={"inplace": True}, deep_supervision=deep_supervision)
    base = ResidualEncoderUNet(n_blocks_per_stage=1, **common) if residual else \
        PlainConvUNet(n_conv_per_stage=1, **common)
    base.apply(base.initialize)
    return base


def make_net(config, deep_supervision=True, residual=False, seed=0, **options):
    base = make_base(config["dim"], config["strides"], residual=residual, deep_supervision=deep_supervision,
                     seed=seed)
    return base, SCDLUNet(base, 3, config["patch"], **{**SMALL, **options})


def randomise_projections(net, seed=1):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for linear in net.scdl.prior_projections.maps:
            linear.weight.copy_(torch.randn(linear.weight.shape, generator=generator) * 0.5)


@pytest.mark.parametrize("config", [ANISO, ISO2D], ids=["3d-anisotropic", "2d"])
@pytest.mark.parametrize("token_source", ["decoder", "encoder"])
def test_shapes_and_identity_at_init(config, token_source):
    base, net = make_net(config, token_source=token_source)
    x = torch.randn(2, 1, *config["patch"])
    base.eval(), net.eval()
    reference, outputs = base(x), net(x)
    assert isinstance(outputs, list) and len(outputs) == len(reference) == len(config["strides"]) - 1
    for out, ref in zip(outputs, reference):
        assert out.shape == ref.shape
        torch.testing.assert_close(out, ref)  # zero-initialised projections: the host's function at init
    net.train()
    outputs, aux = net(x, return_scdl=True)
    grid = tuple(p // s for p, s in zip(config["patch"], net.token_strides))
    assert aux.token_grid == grid == net.token_grid
    tokens = int(torch.tensor(grid).prod())
    assert aux.scdl.priors.shape == (2, tokens, 3 * 16) and aux.scdl.log_joint.shape == (2, tokens, 3)


def test_residual_encoder_unet_is_supported():
    base, net = make_net(ANISO, residual=True)
    x = torch.randn(1, 1, *ANISO["patch"])
    base.eval(), net.eval()
    torch.testing.assert_close(net(x)[0], base(x)[0])
    assert net.token_strides == (4, 8, 8)


def test_anisotropic_grid_and_token_channels():
    _, net = make_net(ANISO)
    assert net.token_strides == (4, 8, 8) and net.token_grid == (2, 2, 2)
    assert net.scdl.in_channels == 4  # decoder tokens: the full-resolution decoder feature F
    _, enc = make_net(ANISO, token_source="encoder")
    assert enc.scdl.in_channels == 32  # encoder stage 3 (cumulative stride 4×8×8)


def test_priors_reach_every_deep_supervision_output_only_in_decoder_mode():
    x = torch.randn(1, 1, *ANISO["patch"])
    base, net = make_net(ANISO, prior_mode="decoder")
    randomise_projections(net)
    base.eval(), net.eval()
    for out, ref in zip(net(x), base(x)):
        assert not torch.allclose(out, ref)
    base, head = make_net(ANISO, prior_mode="head")
    randomise_projections(head)
    base.eval(), head.eval()
    outputs, reference = head(x), base(x)
    assert not torch.allclose(outputs[0], reference[0])
    for out, ref in zip(outputs[1:], reference[1:]):
        torch.testing.assert_close(out, ref)
    assert len(head.scdl.prior_projections) == 1 and len(net.scdl.prior_projections) == 3


def test_none_mode_has_no_projections_and_keeps_host_outputs():
    base, net = make_net(ISO2D, prior_mode="none")
    assert len(net.scdl.prior_projections) == 0
    x = torch.randn(2, 1, *ISO2D["patch"])
    base.eval(), net.eval()
    torch.testing.assert_close(net(x)[0], base(x)[0])
    outputs, aux = net(x, return_scdl=True)
    assert aux.scdl.priors is None
    torch.testing.assert_close(outputs[0], base(x)[0])


def test_folded_head_prior_equals_feature_injection():
    _, net = make_net(ISO2D, prior_mode="head")
    randomise_projections(net)
    net.eval()
    net.decoder.deep_supervision = False
    x = torch.randn(2, 1, *ISO2D["patch"])
    features = net.forward_features(x)
    logits, aux = net.forward_heads(features, return_scdl=True)
    torch.testing.assert_close(logits, net(x))
    prior = tokens_to_map(net.scdl.prior_projections(aux.scdl.priors, 0), aux.token_grid)
    prior = F.interpolate(prior, size=features[-1].shape[2:], mode="bilinear", align_corners=False)
    torch.testing.assert_close(logits, net.decoder.seg_layers[-1](features[-1] + prior), atol=1e-5, rtol=1e-5)
    with torch.no_grad():  # the in-place inference path gives the same logits
        torch.testing.assert_close(net(x), logits, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("token_source", ["decoder", "encoder"])
def test_eval_is_deterministic_with_live_priors(token_source):
    _, net = make_net(ANISO, token_source=token_source)
    randomise_projections(net)
    x = torch.randn(2, 1, *ANISO["patch"])
    net.eval()
    first, second = net(x), net(x)
    for a, b in zip(first, second):
        assert torch.equal(a, b)
    net.train()
    assert not torch.equal(net(x)[0], net(x)[0])  # training samples fresh noise (and dropout)


def test_inference_reuses_parameter_derived_tensors_until_the_weights_change():
    """Eval + no_grad caches μ̂, the proxy samples (from μ and ρ) and the folded head weights; any in-place weight
    update (an optimiser step, an EMA update, load_state_dict) must invalidate them."""
    _, net = make_net(ANISO)
    randomise_projections(net)
    x = torch.randn(2, 1, *ANISO["patch"])
    net.eval()
    net.decoder.deep_supervision = False
    with torch.no_grad():
        first = net(x)
        assert len(net.scdl.eval_cache._entries) == 2  # proxy geometry and the folded head
        torch.testing.assert_close(net(x), first, atol=0, rtol=0)
        for parameter in (net.scdl.class_proxies.mu, net.scdl.class_proxies.rho,
                          net.scdl.prior_projections.maps[-1].weight, net.decoder.seg_layers[-1].weight):
            parameter.mul_(1.5)
            updated = net(x)
            net.scdl.eval_cache.clear()
            torch.testing.assert_close(updated, net(x), atol=0, rtol=0)  # same as recomputed from scratch
            assert not torch.equal(updated, first)
            first = updated
    net.train()  # training never reads the cache: the graph must reach the parameters
    net.decoder.deep_supervision = True
    outputs, aux = net(x, return_scdl=True)
    (outputs[0].sum() + aux.scdl.mean_similarity.sum()).backward()
    assert net.scdl.class_proxies.mu.grad is not None and net.scdl.prior_projections.maps[-1].weight.grad is not None


def test_inference_skips_the_loss_inputs():
    _, net = make_net(ANISO)
    x = torch.randn(2, 1, *ANISO["patch"])
    tokens = torch.randn(2, net.num_tokens, net.scdl.in_channels)
    out = net.scdl(tokens, compute_losses=False)
    assert out.mean_sample_similarity is None and out.priors is not None
    with pytest.raises(ValueError, match="compute_losses=False"):
        net.scdl.loss_terms(out, n_labeled=0)
    _, aux = net(x, return_scdl=True)
    assert aux.scdl.mean_sample_similarity is not None


@pytest.mark.parametrize("token_source", ["decoder", "encoder"])
def test_forward_traces_into_one_graph_for_torch_compile(token_source):
    """nnU-Net compiles the network by default on GPUs. A graph break (e.g. a NumPy call on shapes, which dynamo
    turns into a data-dependent tensor read) makes every deep-supervision head a separate recompilation, until
    dynamo's recompile limit drops the network back to eager."""
    _, net = make_net(ANISO, token_source=token_source)
    x = torch.randn(2, 1, *ANISO["patch"])
    net.train()
    explanation = torch._dynamo.explain(lambda t: net(t, return_scdl=True))(x)
    assert explanation.graph_break_count == 0, [b.reason for b in explanation.break_reasons]
    net.eval()
    net.decoder.deep_supervision = False
    with torch.no_grad():
        explanation = torch._dynamo.explain(net)(x)
    assert explanation.graph_break_count == 0, [b.reason for b in explanation.break_reasons]
    torch._dynamo.reset()


def test_compiled_forward_is_not_recompiled_on_the_next_call():
    """Caches filled while tracing (interpolation matrices, the inference cache) must not fail dynamo's guards on the
    next call. backend="eager": dynamo's tracing and guards without inductor's slow code generation."""
    torch._dynamo.reset()
    _, net = make_net(ANISO)
    compiled = torch.compile(net, backend="eager")
    x = torch.randn(2, 1, *ANISO["patch"])
    net.train()
    compiled(x, return_scdl=True)
    with torch._dynamo.config.patch(error_on_recompile=True):
        compiled(x, return_scdl=True)
    net.eval()
    net.decoder.deep_supervision = False
    with torch.no_grad():
        compiled(x)
        with torch._dynamo.config.patch(error_on_recompile=True):
            compiled(x)
    torch._dynamo.reset()


def test_deep_supervision_switch_like_nnunet():
    _, net = make_net(ISO2D)
    x = torch.randn(1, 1, *ISO2D["patch"])
    net.decoder.deep_supervision = False  # what nnUNetTrainer.set_deep_supervision_enabled does
    assert isinstance(net(x), torch.Tensor)
    net.decoder.deep_supervision = True
    assert isinstance(net(x), list)


def test_state_dict_keys_and_strict_round_trip_into_a_fresh_non_ds_network():
    base, net = make_net(ANISO)
    base_keys = set(make_base(ANISO["dim"], ANISO["strides"]).state_dict())
    keys = set(net.state_dict())
    assert base_keys <= keys
    assert all(k.startswith("scdl.") for k in keys - base_keys) and keys - base_keys
    randomise_projections(net)
    _, fresh = make_net(ANISO, deep_supervision=False, seed=123)
    fresh.load_state_dict(net.state_dict(), strict=True)
    x = torch.randn(1, 1, *ANISO["patch"])
    net.eval(), fresh.eval()
    net.decoder.deep_supervision = False
    assert torch.equal(net(x), fresh(x))


def labeled_batch(config, batch=3, ignore=None, seed=0):
    generator = torch.Generator().manual_seed(seed)
    target = torch.randint(0, 3, (batch, 1, *config["patch"]), generator=generator)
    if ignore is not None:
        target[0, 0, : config["patch"][0] // 2] = ignore
    return torch.randn(batch, 1, *config["patch"], generator=generator), target


@pytest.mark.parametrize("token_source", ["decoder", "encoder"])
def test_training_step_gradients_and_loss_terms(token_source):
    _, net = make_net(ANISO, token_source=token_source)
    x, target = labeled_batch(ANISO, ignore=255)
    net.train()
    outputs, aux = net(x, return_scdl=True)
    terms, breakdown = net.scdl_loss_terms(aux, target, n_labeled=2, ignore_label=255, return_breakdown=True)
    assert set(terms) == {"cdba_labeled", "cdba_unlabeled", "sac"}
    assert all(torch.isfinite(t) and t.dtype == torch.float32 for t in terms.values())
    # ignored half of image 0 drops its tokens: 8 tokens per image, 4 of image 0 fully ignored
    assert breakdown["tokens_labeled"].item() == 12 and breakdown["tokens_unlabeled"].item() == 8
    loss = sum(o.float().mean() for o in outputs) + sum(terms.values())
    loss.backward()
    assert all(p.grad is not None for p in net.encoder.parameters())
    assert net.scdl.projection.layers[0].weight.grad.abs().sum() > 0
    assert net.scdl.class_proxies.mu.grad.abs().sum() > 0
    assert net.scdl.prior_projections.maps[-1].weight.grad.abs().sum() > 0


def test_sac_through_the_wrapper_moves_only_proxy_means():
    _, net = make_net(ANISO)
    x, target = labeled_batch(ANISO)
    outputs, aux = net(x, return_scdl=True)
    net.scdl_loss_terms(aux, target, n_labeled=2)["sac"].backward()
    for name, parameter in net.named_parameters():
        if name == "scdl.class_proxies.mu":
            assert parameter.grad is not None and parameter.grad.abs().sum() > 0
        else:
            assert parameter.grad is None or parameter.grad.abs().sum() == 0, name


def test_sac_background_option_and_anchor_rows():
    _, net = make_net(ISO2D, sac_include_background=False)
    x = torch.randn(1, 1, *ISO2D["patch"])
    target = torch.zeros(1, 1, *ISO2D["patch"], dtype=torch.long)  # background only: no anchor left
    outputs, aux = net(x, return_scdl=True)
    assert net.scdl_loss_terms(aux, target, n_labeled=1)["sac"].item() == 0.0


def test_pseudo_labels_replace_the_joint_assignment_for_unlabeled_images():
    _, net = make_net(ISO2D)
    net.eval()
    x, target = labeled_batch(ISO2D)
    _, aux = net(x, return_scdl=True)
    default = net.scdl_loss_terms(aux, target[:1], n_labeled=1)["cdba_unlabeled"]
    pseudo_full = net.scdl_loss_terms(aux, target, n_labeled=1, pseudo_label=target)["cdba_unlabeled"]
    pseudo_tail = net.scdl_loss_terms(aux, target, n_labeled=1, pseudo_label=target[1:])["cdba_unlabeled"]
    assert pseudo_full.item() == pytest.approx(pseudo_tail.item())
    assert pseudo_full.item() != pytest.approx(default.item())


def test_loss_terms_validate_targets():
    _, net = make_net(ISO2D)
    x, target = labeled_batch(ISO2D)
    _, aux = net(x, return_scdl=True)
    with pytest.raises(ValueError, match="spatial shape"):
        net.scdl_loss_terms(aux, target[..., ::2, ::2], n_labeled=2)
    with pytest.raises(ValueError, match=r"lie in \[0, 3\)"):
        net.scdl_loss_terms(aux, target + 3, n_labeled=2)
    with pytest.raises(ValueError, match="required"):
        net.scdl_loss_terms(aux, None, n_labeled=1)
    terms = net.scdl_loss_terms(aux, None, n_labeled=0)
    assert terms["cdba_labeled"].item() == 0.0


def test_constructor_validation():
    base = make_base(ANISO["dim"], ANISO["strides"])
    with pytest.raises(ValueError, match="divisible"):
        SCDLUNet(base, 3, (6, 16, 16))
    with pytest.raises(ValueError, match="num_classes"):
        SCDLUNet(base, 4, ANISO["patch"])
    with pytest.raises(ValueError, match="prior_mode"):
        SCDLUNet(base, 3, ANISO["patch"], prior_mode="bottleneck")
    with pytest.raises(ValueError, match="UNetDecoder"):
        SCDLUNet(nn.Conv3d(1, 3, 1), 3, ANISO["patch"])


def plans_configuration(patch):
    kwargs = {"n_stages": 4, "features_per_stage": [4, 8, 16, 32], "conv_op": "torch.nn.modules.conv.Conv3d",
              "kernel_sizes": [[3, 3, 3]] * 4, "strides": ANISO["strides"], "n_conv_per_stage": [1, 1, 1, 1],
              "n_conv_per_stage_decoder": [1, 1, 1], "conv_bias": True,
              "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
              "norm_op_kwargs": {"eps": 1e-05, "affine": True}, "dropout_op": None, "dropout_op_kwargs": None,
              "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True}}
    return SimpleNamespace(network_arch_class_name="dynamic_network_architectures.architectures.unet.PlainConvUNet",
                           network_arch_init_kwargs=kwargs,
                           network_arch_init_kwargs_req_import=["conv_op", "norm_op", "dropout_op", "nonlin"],
                           patch_size=list(patch))


def test_predictor_path_build_strict_load_forward():
    configuration = plans_configuration(ANISO["patch"])
    torch.manual_seed(0)
    trained = build_scdl_network_from_plans(configuration, 1, 3, enable_deep_supervision=True, **SMALL)
    optimizer = torch.optim.SGD(trained.parameters(), lr=0.1)
    x, target = labeled_batch(ANISO, batch=2)
    for _ in range(2):  # a couple of steps so that the prior projections leave zero
        outputs, aux = trained(x, return_scdl=True)
        terms = trained.scdl_loss_terms(aux, target, n_labeled=1)
        loss = F.cross_entropy(outputs[0], target[:, 0]) + sum(terms.values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert trained.scdl.prior_projections.maps[-1].weight.abs().sum() > 0
    checkpoint = {"network_weights": trained.state_dict()}
    torch.manual_seed(99)
    predictor_net = build_scdl_network_from_plans(configuration, 1, 3, enable_deep_supervision=False, **SMALL)
    predictor_net.load_state_dict(checkpoint["network_weights"])  # strict, as nnU-Net's predictor does
    predictor_net.eval(), trained.eval()
    trained.decoder.deep_supervision = False
    prediction = predictor_net(x)
    assert isinstance(prediction, torch.Tensor) and prediction.shape == (2, 3, *ANISO["patch"])
    assert torch.equal(prediction, predictor_net(x))
    torch.testing.assert_close(prediction, trained(x))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="fp16 autocast needs CUDA")
def test_no_nan_under_fp16_autocast_through_the_network():
    _, net = make_net(ANISO)
    randomise_projections(net)
    net = net.cuda().train()
    x, target = labeled_batch(ANISO, ignore=255)
    x, target = x.cuda() * 100, target.cuda()  # large inputs stress fp16 activations
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")  # the SCDL training path must not block the host
    try:
        with torch.autocast("cuda", dtype=torch.float16):
            outputs, aux = net(x, return_scdl=True)
            terms = net.scdl_loss_terms(aux, target, n_labeled=2, ignore_label=255)
            loss = sum(o.float().mean() for o in outputs) + sum(terms.values())
        loss.backward(retain_graph=True)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    net.zero_grad()
    assert outputs[0].dtype == torch.float16 and aux.scdl.priors.dtype == torch.float32
    assert all(torch.isfinite(o).all() for o in outputs)
    assert all(torch.isfinite(t) for t in terms.values())
    loss.backward()
    for name, parameter in net.named_parameters():
        if parameter.grad is not None:
            assert torch.isfinite(parameter.grad).all(), name
    net.eval()
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.float16):
        net.decoder.deep_supervision = False
        first, second = net(x), net(x)
    assert torch.isfinite(first).all() and torch.equal(first, second)
