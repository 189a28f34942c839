"""The paper's networks: shapes, sizes, initialisation, and Taylor mode on them."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import crbook
from crbook.models import MLP, MnistCNN

D = torch.float64


def _count(model):
    return sum(p.numel() for p in model.parameters())


def test_mlp_shape_and_parameter_count():
    model = MLP()
    assert model(torch.zeros(5, 2)).shape == (5, 2)
    # (in * out + out) per linear layer: 2-64, 64-64, 64-2
    assert _count(model) == (2 * 64 + 64) + (64 * 64 + 64) + (64 * 2 + 2)
    deep = MLP((3, 7, 5, 4, 6), activation="gelu")
    assert deep(torch.zeros(2, 3)).shape == (2, 6)
    assert _count(deep) == 3 * 7 + 7 + 7 * 5 + 5 + 5 * 4 + 4 + 4 * 6 + 6


def test_mlp_is_xavier_uniform_with_zero_biases():
    torch.manual_seed(0)
    model = MLP((2, 64, 64, 2))
    linears = [m for m in model if isinstance(m, nn.Linear)]
    assert len(linears) == 3
    for layer in linears:
        fan_out, fan_in = layer.weight.shape
        bound = math.sqrt(6 / (fan_in + fan_out))
        assert torch.all(layer.bias == 0)
        assert layer.weight.abs().max() <= bound
    big = linears[1].weight  # 4096 draws from U(-b, b): variance b²/3
    bound = math.sqrt(6 / 128)
    assert big.abs().max() > 0.95 * bound
    assert big.var().item() == pytest.approx(bound**2 / 3, rel=0.08)


@pytest.mark.parametrize(
    "name, kind",
    [
        ("tanh", nn.Tanh),
        ("sigmoid", nn.Sigmoid),
        ("softplus", nn.Softplus),
        ("gelu", nn.GELU),
        ("silu", nn.SiLU),
        ("relu", nn.ReLU),
        ("TANH", nn.Tanh),
    ],
)
def test_activation_by_name(name, kind):
    model = MLP((2, 4, 4, 2), activation=name)
    acts = [m for m in model if not isinstance(m, nn.Linear)]
    assert len(acts) == 2 and all(type(m) is kind for m in acts)


def test_activation_as_class_or_instance_is_never_shared():
    shared = nn.PReLU()
    model = MLP((2, 4, 4, 2), activation=shared)
    acts = [m for m in model if isinstance(m, nn.PReLU)]
    assert len(acts) == 2 and acts[0] is not acts[1] and shared not in acts
    assert isinstance(MLP((2, 3, 2), activation=nn.ELU)[1], nn.ELU)


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"sizes": (2,)}, ValueError),
        ({"sizes": (2, 0, 2)}, ValueError),
        ({"sizes": (2, 3.0, 2)}, ValueError),
        ({"activation": "swish"}, ValueError),
        ({"activation": 3}, TypeError),
        ({"activation": torch.tanh}, TypeError),
    ],
)
def test_mlp_rejects_bad_arguments(kwargs, error):
    with pytest.raises(error):
        MLP(**kwargs)


def test_cnn_shape_and_parameter_count():
    model = MnistCNN()
    assert model(torch.zeros(3, 1, 28, 28)).shape == (3, 10)
    conv1 = 32 * 1 * 3 * 3 + 32
    conv2 = 64 * 32 * 3 * 3 + 64
    fc1 = (64 * 12 * 12) * 128 + 128
    fc2 = 128 * 10 + 10
    assert _count(model) == conv1 + conv2 + fc1 + fc2 == 1_199_882


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_cnn_computes_the_papers_layers_in_order(activation):
    torch.manual_seed(1)
    model = MnistCNN(activation=activation).eval()
    act = torch.relu if activation == "relu" else torch.tanh
    x = torch.randn(2, 1, 28, 28)
    h = act(F.conv2d(x, model.conv1.weight, model.conv1.bias))
    h = act(F.conv2d(h, model.conv2.weight, model.conv2.bias))
    h = F.max_pool2d(h, 2).reshape(2, -1)
    h = act(h @ model.fc1.weight.T + model.fc1.bias)
    want = h @ model.fc2.weight.T + model.fc2.bias
    torch.testing.assert_close(model(x), want)


def test_cnn_runs_its_layers_in_the_papers_order():
    model = MnistCNN()
    names = {module: name for name, module in model.named_children()}
    calls = []
    for module in names:
        module.register_forward_hook(lambda m, i, o: calls.append(names[m]))
    model(torch.zeros(1, 1, 28, 28))
    order = "conv1 act1 conv2 act2 pool dropout1 flatten fc1 act3 dropout2 fc2"
    assert calls == order.split()


def test_cnn_dropout_acts_in_training_mode_only():
    torch.manual_seed(2)
    model = MnistCNN(dropout=0.5)
    x = torch.randn(4, 1, 28, 28)
    model.train()
    assert not torch.equal(model(x), model(x))
    model.eval()
    assert torch.equal(model(x), model(x))
    assert all(m.p == 0.5 for m in model.modules() if isinstance(m, nn.Dropout))
    for bad, error in ((1.0, ValueError), (-0.1, ValueError), ("0.5", TypeError)):
        with pytest.raises(error):
            MnistCNN(dropout=bad)


def _taylor_matches_autograd(model, x, labels):
    g = torch.Generator().manual_seed(7)
    u = torch.randn(x.shape, generator=g, dtype=D)

    def loss(z):
        return F.cross_entropy(model(z), labels, reduction="none")

    taylor = crbook.directional_derivatives(loss, x, u, 3)
    nested = crbook.directional_derivatives(loss, x, u, 3, method="autograd")
    torch.testing.assert_close(taylor, nested.detach(), rtol=1e-10, atol=1e-14)
    assert taylor[1:].abs().max() > 1e-6  # a real comparison, not of zeros
    return taylor


@pytest.mark.parametrize("activation", ["tanh", "gelu", "relu"])
def test_mlp_works_with_directional_derivatives(activation):
    torch.manual_seed(3)
    model = MLP(activation=activation).to(D).eval()
    x = torch.randn(2, 2, dtype=D)
    _taylor_matches_autograd(model, x, torch.tensor([0, 1]))


@pytest.mark.parametrize("activation", ["relu", "softplus"])
def test_cnn_works_with_directional_derivatives(activation):
    torch.manual_seed(4)
    model = MnistCNN(activation=activation).to(D).eval()
    x = torch.randn(2, 1, 28, 28, dtype=D)
    _taylor_matches_autograd(model, x, torch.tensor([3, 8]))
