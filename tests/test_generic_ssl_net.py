"""GenericSSL network: path shapes, decoupling of the inference path, time conditioning and θ-aggregation math."""
import pytest
import torch
from torch import nn

from nnunetv2_scdl.networks.diffusion import ddim_sample, labels_to_x0
from nnunetv2_scdl.networks.generic_ssl_net import GenericSSLNet, aggregate_parameters

C = 3
SHAPE = (2, 1, 4, 8, 8)  # anisotropic tiny patch; strides (1, 2, (1,2,2)) → bottleneck 2×2×2


def tiny_net(deep_supervision=False, seed=0):
    torch.manual_seed(seed)
    return GenericSSLNet(1, 3, [4, 8, 16], nn.Conv3d, 3, [1, 2, (1, 2, 2)], 1, C, 1, norm_op=nn.InstanceNorm3d,
                         norm_op_kwargs={"affine": True}, nonlin=nn.LeakyReLU, deep_supervision=deep_supervision,
                         time_embed_dim=16, time_hidden_dim=32)


@pytest.fixture(scope="module")
def image():
    return torch.randn(SHAPE, generator=torch.Generator().manual_seed(0))


def test_shapes_and_deep_supervision_toggle(image):
    net = tiny_net(deep_supervision=False)
    out = net(image)
    assert isinstance(out, torch.Tensor) and out.shape == (2, C, 4, 8, 8)
    assert net.forward_psi(image).shape == (2, C, 4, 8, 8)
    x_t = torch.randn(2, C, 4, 8, 8)
    assert net.forward_xi(x_t, torch.tensor([3, 900]), image).shape == (2, C, 4, 8, 8)
    theta, psi = net.forward_theta_psi(image)
    assert torch.allclose(theta, out) and torch.allclose(psi, net.forward_psi(image))
    # nnU-Net's set_deep_supervision_enabled writes network.decoder.deep_supervision (D_θ only)
    net.decoder.deep_supervision = True
    ds = net(image)
    assert [o.shape for o in ds] == [(2, C, 4, 8, 8), (2, C, 2, 4, 4), (2, C, 2, 2, 2)][:2]
    assert isinstance(net.forward_psi(image), torch.Tensor)
    net.set_deep_supervision(True)
    assert all(isinstance(f(), list) for f in (lambda: net.forward_psi(image),
                                               lambda: net.forward_xi(x_t, torch.tensor([0, 1]), image)))
    with pytest.raises(ValueError, match="x_t must be"):
        net.forward_xi(x_t[:, :2], torch.tensor([0, 1]), image)
    with pytest.raises(ValueError, match="t must be"):
        net.forward_xi(x_t, torch.tensor([0]), image)


def test_inference_path_ignores_other_branches(image):
    net = tiny_net().eval()
    ref = net(image)
    with torch.no_grad():
        for m in (net.decoder_xi, net.decoder_psi, net.stem_diffusion, net.time_embedding):
            for p in m.parameters():
                if not any(p is q for q in net.encoder.parameters()):
                    p.add_(torch.randn_like(p))
        for p in net.encoder.time_proj.parameters():  # time projections are unused on the image path
            p.add_(1.0)
    assert torch.equal(net(image), ref)
    with torch.no_grad():
        net.decoder.seg_layers[-1].bias.add_(1.0)
    assert not torch.allclose(net(image), ref)


def test_xi_is_time_and_label_conditioned(image):
    net = tiny_net().eval()
    x_t = torch.randn(2, C, 4, 8, 8)
    a = net.forward_xi(x_t, torch.tensor([10, 10]), image)
    b = net.forward_xi(x_t, torch.tensor([500, 500]), image)
    c = net.forward_xi(torch.randn(2, C, 4, 8, 8), torch.tensor([10, 10]), image)
    assert not torch.allclose(a, b) and not torch.allclose(a, c)
    # both the encoder stages and D_ξ's up-sampling stages are time-conditioned
    with torch.no_grad():
        net.decoder_xi.time_proj[0].bias.add_(1.0)
    assert not torch.allclose(net.forward_xi(x_t, torch.tensor([10, 10]), image), a)
    with torch.no_grad():
        net.decoder_xi.time_proj[0].bias.sub_(1.0)
        net.encoder.time_proj[-1].bias.add_(1.0)
    assert not torch.allclose(net.forward_xi(x_t, torch.tensor([10, 10]), image), a)


def test_aggregation_math():
    net = tiny_net(seed=1)
    with torch.no_grad():  # make ξ, ψ, θ clearly different
        for p in net.decoder_xi.parameters():
            p.add_(1.0)
        for p in net.decoder_psi.parameters():
            p.sub_(0.5)
    theta = {n: p.detach().clone() for n, p in net.decoder.named_parameters()}
    xi = {n: p.detach().clone() for n, p in net.decoder_xi.named_parameters()}
    psi = {n: p.detach().clone() for n, p in net.decoder_psi.named_parameters()}
    encoder_before = {n: p.detach().clone() for n, p in net.encoder.named_parameters()}

    updated = net.aggregate_decoders(momentum=0.9)

    expected_names = [n for n in theta if not n.startswith("encoder.")]
    assert updated == expected_names and len(updated) > 0
    assert not any("time_proj" in n for n in updated)
    after = dict(net.decoder.named_parameters())
    for n in expected_names:
        assert torch.allclose(after[n], 0.9 * theta[n] + 0.1 * (xi[n] + psi[n]) / 2, atol=1e-6), n
    for n, p in net.encoder.named_parameters():  # shared encoder untouched
        assert torch.equal(p, encoder_before[n])
    for n, p in net.decoder_xi.named_parameters():  # sources untouched (time_proj included)
        assert torch.equal(p, xi[n])
    net.aggregate_decoders(momentum=0.0)
    for n in expected_names:
        assert torch.allclose(after[n], (xi[n] + psi[n]) / 2, atol=1e-6)
    with pytest.raises(ValueError, match="momentum"):
        net.aggregate_decoders(momentum=1.5)


def test_aggregate_parameters_skips_missing_and_mismatched():
    target = nn.ModuleDict({"a": nn.Linear(2, 2), "b": nn.Linear(2, 3)})
    src1 = nn.ModuleDict({"a": nn.Linear(2, 2), "b": nn.Linear(2, 4)})
    src2 = nn.ModuleDict({"a": nn.Linear(2, 2)})
    b_before = target["b"].weight.detach().clone()
    a_expected = 0.5 * target["a"].weight.detach() + 0.25 * (src1["a"].weight.detach() + src2["a"].weight.detach())
    assert aggregate_parameters(target, [src1, src2], 0.5) == ["a.weight", "a.bias"]
    assert torch.allclose(target["a"].weight, a_expected)
    assert torch.equal(target["b"].weight, b_before)


def test_state_dict_roundtrip_and_ddim_with_net(image):
    net = tiny_net(seed=2).eval()
    other = tiny_net(seed=3).eval()
    other.load_state_dict(net.state_dict(), strict=True)
    assert torch.equal(other(image), net(image))
    shape = (2, C, 4, 8, 8)
    s1 = ddim_sample(net.denoiser(image), shape, num_steps=3, generator=11)
    s2 = ddim_sample(net.denoiser(image), shape, num_steps=3, generator=11)
    assert s1.sample.shape == shape and torch.equal(s1.sample, s2.sample)
    # a training-style denoising call on q-sampled one-hots runs and backpropagates to ξ and the shared encoder only
    net.train()
    x_t = labels_to_x0(torch.randint(0, C, (2, 4, 8, 8)), C)
    loss = net.forward_xi(x_t, torch.tensor([1, 2]), image).square().mean()
    loss.backward()
    assert net.decoder_xi.seg_layers[-1].weight.grad is not None
    assert net.encoder.stages[0][0].convs[0].conv.weight.grad is not None
    assert net.decoder.seg_layers[-1].weight.grad is None and net.stem_image.convs[0].conv.weight.grad is None
