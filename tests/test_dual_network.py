"""DualNetwork on tiny plan-like PlainConvUNets (2d and 3d): averaging, deep supervision, inits, state_dict."""
import math
from types import SimpleNamespace

import pytest
import torch
from dynamic_network_architectures.architectures.unet import PlainConvUNet
from torch import nn
from torch.nn.modules.conv import _ConvNd

from nnunetv2_scdl.networks.dual_network import DualNetwork, InitWeights_XavierNormal, average_network_outputs

NUM_CLASSES = 3


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    # tiny convs: thread start-up costs more than it saves, and the test machine's cores are shared
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _builder(dim, deep_supervision=True):
    """What nnU-Net's get_network_from_plans does for a (tiny) plan: build a PlainConvUNet, then apply its He init."""
    conv, norm = (nn.Conv2d, nn.InstanceNorm2d) if dim == 2 else (nn.Conv3d, nn.InstanceNorm3d)
    strides = [1, 2, 2] if dim == 2 else [1, [1, 2, 2], 2]  # anisotropic first pooling, as 3d plans often have

    def build():
        net = PlainConvUNet(input_channels=1, n_stages=3, features_per_stage=[4, 8, 16], conv_op=conv,
                            kernel_sizes=3, strides=strides, n_conv_per_stage=2, num_classes=NUM_CLASSES,
                            n_conv_per_stage_decoder=1, conv_bias=True, norm_op=norm,
                            norm_op_kwargs={"eps": 1e-5, "affine": True}, nonlin=nn.LeakyReLU,
                            nonlin_kwargs={"inplace": True}, deep_supervision=deep_supervision)
        net.apply(net.initialize)
        return net

    return build


def _input(dim):
    return torch.randn(2, 1, 16, 16) if dim == 2 else torch.randn(2, 1, 4, 16, 16)


@pytest.fixture(params=[2, 3], ids=["2d", "3d"])
def dim(request):
    return request.param


def test_forward_averages_both_networks(dim):
    torch.manual_seed(0)
    dual = DualNetwork.from_builder(_builder(dim))
    x = _input(dim)
    with torch.no_grad():
        outputs = dual(x)  # deep supervision on: a list, highest resolution first
        out_a, out_b = dual.net_a(x), dual.net_b(x)
        assert isinstance(outputs, list) and len(outputs) == 2
        for averaged, a, b in zip(outputs, out_a, out_b):
            torch.testing.assert_close(averaged, (a + b) / 2)
        assert outputs[0].shape == (2, NUM_CLASSES) + tuple(x.shape[2:])

        dual.decoder.deep_supervision = False
        single = dual(x)
        assert isinstance(single, torch.Tensor)
        torch.testing.assert_close(single, (dual.net_a(x) + dual.net_b(x)) / 2)
        both = dual(x, mode="both")
        torch.testing.assert_close(both[0], dual.net_a(x))
        torch.testing.assert_close(both[1], dual.net_b(x))
        torch.testing.assert_close(dual(x, mode="b"), dual.net_b(x))


def test_deep_supervision_toggle_reaches_both_decoders():
    dual = DualNetwork.from_builder(_builder(2, deep_supervision=True))
    dual.decoder.deep_supervision = False
    assert dual.net_a.decoder.deep_supervision is False and dual.net_b.decoder.deep_supervision is False
    assert dual.decoder.deep_supervision is False
    dual.set_deep_supervision_enabled(True)
    assert dual.net_a.decoder.deep_supervision is True and dual.net_b.decoder.deep_supervision is True
    dual.net_b.decoder.deep_supervision = False  # set behind the view's back
    with pytest.raises(RuntimeError, match="disagree"):
        dual.decoder.deep_supervision


def test_nnunet_set_deep_supervision_enabled_reaches_both():
    # the stock trainer method, run on a stand-in trainer: it does `self.network.decoder.deep_supervision = enabled`
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    dual = DualNetwork.from_builder(_builder(2, deep_supervision=True))
    nnUNetTrainer.set_deep_supervision_enabled(SimpleNamespace(is_ddp=False, network=dual), False)
    assert not dual.net_a.decoder.deep_supervision and not dual.net_b.decoder.deep_supervision
    assert isinstance(dual(_input(2)), torch.Tensor)


def _conv_weights(net):
    return [m.weight for m in net.modules() if isinstance(m, _ConvNd)]


def _normalised_std(weights, expected_std):
    """Pool every conv weight divided by the std its init formula predicts; ≈ 1 if the formula matches."""
    pooled = torch.cat([(w.detach() / expected_std(w)).reshape(-1) for w in weights])
    return pooled.std().item()


def _fans(w):
    receptive = math.prod(w.shape[2:])  # torch's convention, also for transposed convs: fan_in = dim 1
    return w.shape[1] * receptive, w.shape[0] * receptive


def _he_std(w):  # kaiming_normal_(a=0.01): gain √(2/(1+a²)), std = gain/√fan_in
    return math.sqrt(2 / (1 + 0.01 ** 2)) / math.sqrt(_fans(w)[0])


def _xavier_std(w):  # xavier_normal_(gain=1): std = √(2/(fan_in + fan_out))
    fan_in, fan_out = _fans(w)
    return math.sqrt(2 / (fan_in + fan_out))


def test_a_keeps_he_init_and_b_gets_xavier_normal(dim):
    torch.manual_seed(0)
    dual = DualNetwork.from_builder(_builder(dim))
    weights_a, weights_b = _conv_weights(dual.net_a), _conv_weights(dual.net_b)
    # thousands of weights pooled: the empirical std is within a few % of 1 under the right formula. For these
    # layers He's std is 1.2-2.9× Xavier's, so each net clearly fails the other formula.
    assert _normalised_std(weights_a, _he_std) == pytest.approx(1.0, abs=0.1)
    assert _normalised_std(weights_b, _xavier_std) == pytest.approx(1.0, abs=0.1)
    assert _normalised_std(weights_b, _he_std) < 0.8
    assert _normalised_std(weights_a, _xavier_std) > 1.25
    for m in dual.net_b.modules():
        if isinstance(m, _ConvNd) and m.bias is not None:
            assert torch.count_nonzero(m.bias) == 0


def test_init_b_none_keeps_the_builder_init_for_both():  # DHC: both He
    torch.manual_seed(0)
    dual = DualNetwork.from_builder(_builder(2), init_b=None)
    assert _normalised_std(_conv_weights(dual.net_b), _he_std) == pytest.approx(1.0, abs=0.1)
    # still two independent draws
    assert not torch.equal(_conv_weights(dual.net_a)[0], _conv_weights(dual.net_b)[0])


def test_xavier_normal_init_on_a_single_conv():
    torch.manual_seed(0)
    conv = nn.Conv3d(16, 32, kernel_size=3, bias=True)
    nn.init.constant_(conv.bias, 1.0)
    InitWeights_XavierNormal()(conv)
    expected = math.sqrt(2 / (16 * 27 + 32 * 27))
    assert conv.weight.std().item() == pytest.approx(expected, rel=0.05)
    assert torch.count_nonzero(conv.bias) == 0


def test_state_dict_keys_and_strict_round_trip(dim):
    torch.manual_seed(0)
    dual = DualNetwork.from_builder(_builder(dim))
    state = dual.state_dict()
    single_keys = set(_builder(dim)().state_dict())
    assert set(state) == {f"net_a.{k}" for k in single_keys} | {f"net_b.{k}" for k in single_keys}

    # what the predictor does: build with deep supervision off, then strict load
    restored = DualNetwork.from_builder(_builder(dim, deep_supervision=False))
    restored.load_state_dict(state, strict=True)
    dual.decoder.deep_supervision = False
    x = _input(dim)
    with torch.no_grad():
        torch.testing.assert_close(restored(x), dual(x), rtol=0, atol=0)


def test_average_network_outputs_validation():
    a = torch.ones(1, 2, 3)
    averaged = average_network_outputs((a, 3 * a), (3 * a, a))
    assert isinstance(averaged, tuple) and torch.equal(averaged[0], 2 * a) and torch.equal(averaged[1], 2 * a)
    with pytest.raises(ValueError, match="deep supervision"):
        average_network_outputs([a, a], [a])
    with pytest.raises(ValueError, match="cannot average"):
        average_network_outputs(a, [a])
    with pytest.raises(ValueError, match="shapes differ"):
        average_network_outputs(a, torch.ones(1, 2, 4))


def test_constructor_and_mode_validation():
    net = _builder(2)()
    with pytest.raises(ValueError, match="same object"):
        DualNetwork(net, net)
    with pytest.raises(ValueError, match="same object twice"):
        DualNetwork.from_builder(lambda: net)
    dual = DualNetwork(net, _builder(2)())
    with pytest.raises(ValueError, match="mode"):
        dual(_input(2), mode="ensemble")
    with pytest.raises(ValueError, match="return_scdl=True needs mode='both'"):
        dual(_input(2), return_scdl=True)
    no_decoder = DualNetwork(nn.Conv2d(1, 3, 1), nn.Conv2d(1, 3, 1))
    with pytest.raises(RuntimeError, match="decoder.deep_supervision"):
        no_decoder.decoder.deep_supervision = False
