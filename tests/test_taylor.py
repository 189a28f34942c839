"""Taylor mode against nested autograd (float64) and against closed forms."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import crbook
from crbook import Jet
from crbook.timing import _graph_nodes

D = torch.float64
TOL = 1e-9


def _inputs(shape, seed=0, dtype=D):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g, dtype=dtype)
    u = torch.randn(shape, generator=g, dtype=dtype)
    return x, u


def assert_close_per_order(a, b, tol=TOL):
    """Each order's largest error is at most ``tol`` times that order's size."""
    assert a.shape == b.shape
    for k in range(a.shape[0]):
        scale = b[k].abs().max().item()
        err = (a[k] - b[k]).abs().max().item()
        assert err <= tol * scale + 1e-300, (
            f"order {k}: error {err:.3e}, size {scale:.3e}"
        )


def check(f, x, u, order=8, tol=TOL):
    """Taylor mode against nested autograd, along both of the engine's code paths.

    Without autograd the recurrences write into preallocated tensors; under
    autograd (here forced by an input that requires a gradient) each coefficient
    is a fresh tensor. Both must give the nested-autograd derivatives.
    """
    nested = crbook.directional_derivatives(f, x, u, order, method="autograd")
    nested = nested.detach()
    taylor = crbook.directional_derivatives(f, x, u, order)
    assert_close_per_order(taylor, nested, tol)
    with torch.no_grad():
        writable = crbook.directional_derivatives(f, x, u, order)
    assert_close_per_order(writable, nested, tol)
    recorded = crbook.directional_derivatives(f, x.clone().requires_grad_(), u, order)
    assert recorded.requires_grad
    assert_close_per_order(recorded.detach(), nested, tol)
    return taylor


def _labels(n, classes, seed=0):
    return torch.randint(classes, (n,), generator=torch.Generator().manual_seed(seed))


ELEMENTWISE = {
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "exp": torch.exp,
    "sin": torch.sin,
    "cos": torch.cos,
    "erf": torch.erf,
    "softplus": F.softplus,
    "softplus_beta": lambda z: F.softplus(z, beta=3.0, threshold=4.0),
    "gelu": F.gelu,
    "gelu_tanh": lambda z: F.gelu(z, approximate="tanh"),
    "silu": F.silu,
    "logsigmoid": F.logsigmoid,
    "log": lambda z: torch.log(1.5 + torch.sin(z)),
    "log1p": lambda z: torch.log1p(z * z),
    "expm1": torch.expm1,
    "sinh": torch.sinh,
    "cosh": torch.cosh,
    "sqrt": lambda z: torch.sqrt(z * z + 1.0),
    "rsqrt": lambda z: torch.rsqrt(z * z + 0.5),
    "power": lambda z: (z * z + 1.0) ** -1.5,
    "integer_power": lambda z: z**5 - 3 * z**2,
    "reciprocal": lambda z: torch.reciprocal(2.0 + torch.cos(z)),
    "quotient": lambda z: torch.sin(z) / (z * z + 2.0),
    "constant_over": lambda z: 3.0 / (z * z + 2.0),
    "product": lambda z: torch.tanh(z) * torch.exp(-z) * z,
    "square": lambda z: torch.square(torch.sin(z)),
    "sum_difference": lambda z: torch.sin(z) - 2 * torch.cos(z) + 1.0,
    "relu_times_smooth": lambda z: torch.relu(z) * torch.sin(z),
    "leaky_relu": lambda z: F.leaky_relu(z, 0.1) * torch.cos(z),
    "abs": lambda z: torch.abs(z) * torch.exp(z),
    "clamp": lambda z: torch.clamp(z, -0.5, 0.5) * torch.tanh(z),
    "hardtanh": lambda z: F.hardtanh(z) * z,
    "pow_base": lambda z: 2.0**z,
}


@pytest.mark.parametrize("name", sorted(ELEMENTWISE))
def test_elementwise_rules_match_nested_autograd(name):
    x, u = _inputs((4, 3))
    check(ELEMENTWISE[name], x, u, order=8)


@pytest.mark.parametrize("order", range(1, 9))
def test_every_order_up_to_eight(order):
    """Truncating at each order gives the same leading derivatives."""
    x, u = _inputs((3, 5), seed=order)
    net = nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 4), nn.GELU())
    net = net.to(D)
    check(net, x, u, order=order)


REDUCTIONS = {
    "log_softmax": lambda z: F.log_softmax(z, dim=1),
    "softmax": lambda z: torch.softmax(z, dim=-1),
    "logsumexp": lambda z: torch.logsumexp(z, dim=1),
    "sum": lambda z: torch.sin(z).sum(1),
    "mean_keepdim": lambda z: torch.sin(z).mean(dim=-1, keepdim=True) * z,
    "cross_entropy": lambda z: F.cross_entropy(z, _labels(4, 5), reduction="none"),
    "nll_loss": lambda z: F.nll_loss(
        F.log_softmax(z, 1), _labels(4, 5), reduction="none"
    ),
    "mse": lambda z: F.mse_loss(z, torch.ones_like(z), reduction="none").sum(1),
    "matmul": lambda z: torch.tanh(z @ torch.linspace(-1, 1, 10, dtype=D).view(5, 2)),
    "rmatmul": lambda z: torch.tanh(
        (torch.linspace(-1, 1, 10, dtype=D).view(2, 5) @ z.unsqueeze(-1)).squeeze(-1)
    ),
    "indexing": lambda z: torch.sin(z[:, 1:4]) * z[:, :1] + z[:, [0, 2]].sum(1, True),
    "reshape": lambda z: torch.tanh(z.reshape(4, 5, 1).transpose(1, 2).flatten(1)),
    "cat_stack": lambda z: torch.cat([torch.sin(z), z, torch.ones(4, 1, dtype=D)], 1),
    "where": lambda z: torch.where(z > 0, torch.sin(z), z * z),
}


@pytest.mark.parametrize("name", sorted(REDUCTIONS))
def test_reductions_losses_and_shapes(name):
    x, u = _inputs((4, 5), seed=1)
    check(REDUCTIONS[name], x, u, order=6)


def test_layer_norm_against_its_definition():
    # torch's fused layer_norm has inexact third and higher derivatives in autograd,
    # so the reference is layer normalisation written out.
    x, u = _inputs((4, 6), seed=2)
    w = torch.linspace(0.5, 1.5, 6, dtype=D)
    b = torch.linspace(-1, 1, 6, dtype=D)

    def written_out(z):
        c = z - z.mean(-1, keepdim=True)
        return c * ((c * c).mean(-1, keepdim=True) + 1e-5) ** -0.5 * w + b

    taylor = crbook.directional_derivatives(
        lambda z: F.layer_norm(z, (6,), w, b), x, u, 6
    )
    reference = crbook.directional_derivatives(written_out, x, u, 6, method="autograd")
    assert_close_per_order(taylor, reference.detach(), 1e-8)


def _smooth_mlp(act):
    torch.manual_seed(3)
    return nn.Sequential(
        nn.Linear(4, 8), act, nn.Linear(8, 8), act, nn.Linear(8, 3)
    ).to(D)


@pytest.mark.parametrize(
    "act", [nn.Tanh(), nn.Sigmoid(), nn.Softplus(), nn.GELU(), nn.SiLU()], ids=str
)
def test_random_mlp_loss(act):
    net = _smooth_mlp(act)
    x, u = _inputs((5, 4), seed=4)
    y = _labels(5, 3)
    check(lambda z: F.cross_entropy(net(z), y, reduction="none"), x, u, order=8)


class SmallCNN(nn.Module):
    """Every layer kind of the paper's CNN, and a few more."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 6, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.avg = nn.AvgPool2d(2)
        self.drop = nn.Dropout(0.5)
        self.fc1 = nn.Linear(24, 8)
        self.fc2 = nn.Linear(8, 3)

    def forward(self, x):
        x = F.relu(self.bn(self.conv1(x)))
        x = self.pool(F.relu(self.conv2(x)))
        x = self.avg(x)
        x = self.drop(torch.flatten(x, 1))
        return self.fc2(F.softplus(self.fc1(x)))


def test_random_cnn_loss_in_eval_mode():
    torch.manual_seed(5)
    net = SmallCNN().to(D)
    with torch.no_grad():
        net.bn.running_mean.uniform_(-0.5, 0.5)
        net.bn.running_var.uniform_(0.5, 2.0)
    net.eval()
    x, u = _inputs((3, 1, 10, 10), seed=6)
    y = _labels(3, 3)
    check(lambda z: F.cross_entropy(net(z), y, reduction="none"), x, u, order=6)


def test_layers_on_inputs_with_more_axes():
    """Linear layers act on the last axis, whatever the axes before it."""
    torch.manual_seed(24)
    net = nn.Sequential(nn.Linear(5, 3), nn.Tanh(), nn.Linear(3, 2)).to(D)
    x, u = _inputs((4, 2, 5), seed=24)
    check(net, x, u, order=5)


def test_conv1d_network():
    torch.manual_seed(7)
    net = nn.Sequential(
        nn.Conv1d(2, 3, 3), nn.Tanh(), nn.MaxPool1d(2), nn.Flatten(), nn.Linear(27, 2)
    ).to(D)
    x, u = _inputs((4, 2, 20), seed=8)
    check(net, x, u, order=6)


def test_dropout_in_training_mode_uses_one_mask_for_all_orders():
    net = _smooth_mlp(nn.Tanh())
    net.insert(2, nn.Dropout(0.3))
    net.train()
    x, u = _inputs((6, 4), seed=9)
    torch.manual_seed(11)
    taylor = crbook.directional_derivatives(net, x, u, 5)
    torch.manual_seed(11)
    nested = crbook.directional_derivatives(net, x, u, 5, method="autograd")
    assert_close_per_order(taylor, nested.detach())


CLOSED_FORMS = {
    # f, its k-th derivative at x0 along u = 1
    "exp": (torch.exp, lambda x0, k: math.exp(x0)),
    "sin": (torch.sin, lambda x0, k: math.sin(x0 + k * math.pi / 2)),
    "geometric": (
        lambda z: 1.0 / (1.0 - z),
        lambda x0, k: math.factorial(k) / (1.0 - x0) ** (k + 1),
    ),
}


@pytest.mark.parametrize("name", sorted(CLOSED_FORMS))
@pytest.mark.parametrize("x0", [-0.7, 0.0, 0.3])
def test_closed_forms(name, x0):
    f, exact = CLOSED_FORMS[name]
    x = torch.full((1, 1), x0, dtype=D)
    d = crbook.directional_derivatives(f, x, torch.ones_like(x), 12)
    for k in range(13):
        want = exact(x0, k)
        assert abs(d[k].item() - want) <= 1e-12 * max(1.0, abs(want)), (k, want)


def test_tanh_closed_form_at_zero():
    # tanh x = x - x^3/3 + 2x^5/15 - 17x^7/315 + 62x^9/2835 - ...
    x = torch.zeros(1, 1, dtype=D)
    d = crbook.directional_derivatives(torch.tanh, x, torch.ones_like(x), 9)
    coefficients = {1: 1.0, 3: -1 / 3, 5: 2 / 15, 7: -17 / 315, 9: 62 / 2835}
    for k in range(10):
        want = coefficients.get(k, 0.0) * math.factorial(k)
        assert abs(d[k].item() - want) <= 1e-12 * max(1.0, abs(want))


def test_direction_scales_derivatives():
    """d^k/dt^k f(x + t c u) = c^k d^k/dt^k f(x + t u)."""
    x, u = _inputs((4, 3), seed=12)
    a = crbook.directional_derivatives(torch.tanh, x, u, 7)
    b = crbook.directional_derivatives(torch.tanh, x, 2.0 * u, 7)
    powers = 2.0 ** torch.arange(8, dtype=D).view(-1, 1, 1)
    assert_close_per_order(b, a * powers, 1e-13)


def test_piecewise_linear_layers_keep_degree_one():
    net = nn.Sequential(
        nn.Conv2d(1, 3, 3),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Dropout(0.5),
        nn.Linear(27, 5),
        nn.ReLU(),
    ).eval()
    x, u = _inputs((2, 1, 8, 8), dtype=torch.float32)
    jet = net(Jet(torch.stack([x, u]), 8))
    assert jet.degree == 1 and jet.order == 8
    smooth = torch.tanh(jet)
    assert smooth.degree == 8


def test_gradients_with_respect_to_parameters():
    net = _smooth_mlp(nn.Tanh())
    x, u = _inputs((4, 4), seed=13)
    y = _labels(4, 3)

    def loss(z):
        return F.cross_entropy(net(z), y, reduction="none")

    grads = []
    for method in ("taylor", "autograd"):
        net.zero_grad()
        d = crbook.directional_derivatives(loss, x, u, 4, method=method)
        d[1:].abs().mean().backward()
        grads.append(torch.cat([p.grad.flatten() for p in net.parameters()]))
    assert torch.allclose(grads[0], grads[1], rtol=1e-9, atol=1e-12)


def test_batch_independence():
    net = _smooth_mlp(nn.SiLU())
    x, u = _inputs((6, 4), seed=14)
    whole = crbook.directional_derivatives(net, x, u, 6)
    x2 = x.clone()
    x2[1:] = torch.randn(5, 4, dtype=D)
    changed = crbook.directional_derivatives(net, x2, u, 6)
    alone = crbook.directional_derivatives(net, x[:1], u[:1], 6)
    assert torch.equal(whole[:, 0], changed[:, 0])
    assert torch.allclose(whole[:, :1], alone, rtol=1e-12, atol=0)


def test_float32_agrees_with_float64():
    net = _smooth_mlp(nn.Tanh())
    x, u = _inputs((5, 4), seed=15)
    d64 = crbook.directional_derivatives(net, x, u, 6)
    d32 = crbook.directional_derivatives(net.float(), x.float(), u.float(), 6)
    assert d32.dtype == torch.float32
    assert_close_per_order(d32.double(), d64, 1e-4)


def test_function_that_ignores_its_input():
    x, u = _inputs((3, 2))
    d = crbook.directional_derivatives(lambda z: torch.ones(3, dtype=D), x, u, 4)
    assert d.shape == (5, 3)
    assert torch.equal(d[0], torch.ones(3, dtype=D)) and not d[1:].any()


def test_unsupported_operation_names_the_operation_and_the_layer():
    net = nn.Sequential(nn.Linear(3, 3), nn.Hardswish())
    x, u = _inputs((2, 3), dtype=torch.float32)
    with pytest.raises(crbook.UnsupportedOperationError) as info:
        crbook.directional_derivatives(net, x, u, 3)
    message = str(info.value)
    assert "hardswish" in message and "'1' (Hardswish)" in message


def test_batch_norm_in_training_mode_is_refused():
    net = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3)).train()
    x, u = _inputs((4, 3), dtype=torch.float32)
    with pytest.raises(crbook.UnsupportedOperationError, match="training mode"):
        crbook.directional_derivatives(net, x, u, 2)


def test_unsupported_tensor_method_is_named():
    x, u = _inputs((2, 3))
    with pytest.raises(crbook.UnsupportedOperationError, match="torch.Tensor.cumsum"):
        crbook.directional_derivatives(lambda z: z.cumsum(1), x, u, 2)


@pytest.mark.parametrize(
    ("x", "u", "order", "error", "match"),
    [
        (torch.zeros(2, 3), torch.zeros(2, 4), 2, ValueError, "same shape"),
        (
            torch.zeros(2, 3, dtype=torch.long),
            torch.zeros(2, 3),
            2,
            TypeError,
            "floating",
        ),
        (torch.zeros(2, 3), torch.zeros(2, 3, dtype=D), 2, ValueError, "share dtype"),
        (torch.zeros(2, 3), torch.zeros(2, 3), -1, ValueError, "non-negative"),
        (torch.zeros(2, 3), torch.zeros(2, 3), 2.0, ValueError, "non-negative"),
        (torch.tensor(1.0), torch.tensor(1.0), 2, ValueError, "batch axis"),
        (torch.full((2, 3), math.nan), torch.zeros(2, 3), 2, ValueError, "non-finite"),
        (torch.zeros(2, 3), torch.full((2, 3), math.inf), 2, ValueError, "non-finite"),
    ],
)
def test_bad_inputs(x, u, order, error, match):
    with pytest.raises(error, match=match):
        crbook.directional_derivatives(torch.tanh, x, u, order)


def test_non_finite_derivatives_raise():
    x = torch.full((1, 1), -1.0, dtype=D)
    with pytest.raises(ValueError, match="not finite"):
        crbook.directional_derivatives(torch.log, x, torch.ones_like(x), 3)


def test_unknown_method():
    x, u = _inputs((1, 1))
    with pytest.raises(ValueError, match="'taylor' or 'autograd'"):
        crbook.directional_derivatives(torch.tanh, x, u, 2, method="jet")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    net = _smooth_mlp(nn.Tanh())
    x, u = _inputs((8, 4), seed=16)
    y = _labels(8, 3)

    def loss(model, labels):
        return lambda z: F.cross_entropy(model(z), labels, reduction="none")

    cpu = crbook.directional_derivatives(loss(net, y), x, u, 8)
    net_cuda = net.cuda()
    with torch.autograd.profiler.profile(use_device="cuda") as prof:
        gpu = crbook.directional_derivatives(
            loss(net_cuda, y.cuda()), x.cuda(), u.cuda(), 8, check_finite=False
        )
    copies = [
        e for e in prof.function_events if "Memcpy" in e.name and "DtoH" in e.name
    ]
    assert not copies, "Taylor mode copied from the device to the host"
    assert gpu.is_cuda
    assert_close_per_order(gpu.cpu(), cpu, 1e-10)


def test_confident_cross_entropy_keeps_its_digits_in_float32():
    """Shifting the log-sum-exp by the top logit's whole series avoids cancellation.

    At a confident point the loss and its derivatives are about exp(-margin);
    computed as logsumexp(z) - z[y] they would be differences of numbers of size
    one, and float32 would keep only about exp(-margin) / 1e-7 of their digits.
    """
    g = torch.Generator().manual_seed(21)
    z = torch.randn(64, 10, generator=g, dtype=D)
    y = torch.randint(10, (64,), generator=g)
    z[torch.arange(64), y] += 12.0  # margins near 12: losses near 1e-5
    u = torch.randn(64, 10, generator=g, dtype=D)

    def loss(logits):
        return F.cross_entropy(logits, y, reduction="none")

    exact = crbook.directional_derivatives(loss, z, u, 6)
    single = crbook.directional_derivatives(loss, z.float(), u.float(), 6).double()
    assert exact[0].max() < 1e-3
    # float32 rounding is 6e-8; subtracting numbers of size one would leave ~1e-3
    assert_close_per_order(single, exact, 2e-6)
    median = ((single - exact).abs() / exact.abs()).median().item()
    assert median < 1e-6, median


def test_compiled_pass_matches_eager():
    net = _smooth_mlp(nn.Tanh())
    x, u = _inputs((6, 4), seed=22)
    y = _labels(6, 3)

    def loss(labels):
        return lambda z: F.cross_entropy(net(z), labels, reduction="none")

    with torch.no_grad():
        eager = crbook.directional_derivatives(loss(y), x, u, 4)
        compiled = crbook.directional_derivatives(loss(y), x, u, 4, compile=True)
        # a new batch size reuses the compiled code and is still right
        part = crbook.directional_derivatives(
            loss(y[:3]), x[:3], u[:3], 4, compile=True
        )
    assert_close_per_order(compiled, eager, 1e-12)
    assert_close_per_order(part, eager[:, :3], 1e-12)


def test_compiled_pass_still_names_an_unsupported_operation():
    x, u = _inputs((3, 2))
    net = nn.Sequential(nn.Linear(2, 3), nn.Hardswish()).to(D)
    with pytest.raises(crbook.UnsupportedOperationError, match="hardswish"):
        crbook.directional_derivatives(net, x, u, 2, compile=True)


def test_compile_flag_is_checked():
    x, u = _inputs((2, 2))
    with pytest.raises(TypeError, match="compile must be True or False"):
        crbook.directional_derivatives(torch.tanh, x, u, 2, compile="yes")
    with pytest.raises(ValueError, match="method='taylor' only"):
        crbook.directional_derivatives(
            torch.tanh, x, u, 2, method="autograd", compile=True
        )


def test_constants_take_the_dtype_of_the_jet():
    x, u = _inputs((3, 2))

    def f(z):
        stacked = torch.stack([torch.sin(z), z, torch.zeros(3, 2, dtype=D)], 1)
        return torch.where(z > 0, 2.0 / (1.0 + z * z), 0.5) + stacked.sum(1)

    d = check(f, x, u, order=5)
    assert d.dtype == D


class _OverlapCNN(nn.Module):
    """Biased convolutions, BatchNorm's shift, ReLU and max-pooling whose windows
    overlap (so one input receives the gradient of several outputs)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(2, 3, 3)
        self.bn = nn.BatchNorm2d(3)
        self.conv2 = nn.Conv2d(3, 4, 2)
        self.pool = nn.MaxPool2d(3, stride=1)
        self.fc = nn.Linear(64, 3)

    def forward(self, x):
        x = torch.relu(self.bn(self.conv1(x)))
        x = self.pool(torch.relu(self.conv2(x)))
        return self.fc(torch.tanh(torch.flatten(x, 1)))


def _overlap_cnn():
    torch.manual_seed(31)
    net = _OverlapCNN().to(D)
    with torch.no_grad():
        net.bn.running_mean.uniform_(-0.3, 0.3)
        net.bn.running_var.uniform_(0.5, 2.0)
        net.bn.weight.uniform_(0.5, 1.5)
        net.bn.bias.uniform_(-0.5, 0.5)
    return net.eval()


def _gradients(net, x, u, y, method, frozen=()):
    """Gradients of a CRR-like objective in the parameters (those not frozen) and
    in the input."""
    x = x.clone().requires_grad_()
    for name, p in net.named_parameters():
        p.requires_grad_(name not in frozen)
        p.grad = None

    def loss(z):
        return F.cross_entropy(net(z), y, reduction="none")

    d = crbook.directional_derivatives(loss, x, u, 4, method=method)
    (d[0].mean() + d[1:].abs().mean()).backward()
    grads = {n: p.grad for n, p in net.named_parameters() if p.grad is not None}
    return grads, x.grad


@pytest.mark.parametrize(
    "frozen",
    [(), ("conv1.weight", "conv2.weight"), ("conv2.bias", "fc.bias", "bn.bias")],
    ids=["all", "weights_frozen", "biases_frozen"],
)
def test_parameter_gradients_through_conv_bias_relu_and_overlapping_pools(frozen):
    net = _overlap_cnn()
    x, u = _inputs((3, 2, 9, 9), seed=32)
    y = _labels(3, 3)
    taylor, taylor_x = _gradients(net, x, u, y, "taylor", frozen)
    nested, nested_x = _gradients(net, x, u, y, "autograd", frozen)
    assert (
        set(taylor)
        == set(nested)
        == {n for n, _ in net.named_parameters() if n not in frozen}
    )
    for name in nested:
        assert torch.allclose(taylor[name], nested[name], rtol=1e-9, atol=1e-12), name
    assert torch.allclose(taylor_x, nested_x, rtol=1e-9, atol=1e-12)


def test_layer_rules_copy_no_jet_in_the_backward_pass():
    """A bias written into a slice of the jet would make autograd copy the whole
    jet's gradient (CopySlices); the layer rules use their own functions."""
    net = _overlap_cnn()
    x, u = _inputs((2, 2, 9, 9), seed=33)
    d = crbook.directional_derivatives(net, x, u, 3)
    nodes = {type(node).__name__ for node in _graph_nodes(d)}
    assert "CopySlices" not in nodes
    assert {"_BiasOnValueBackward", "_MaxPoolJetBackward"} <= nodes


def test_jet_layer_functions_pass_gradcheck_and_gradgradcheck():
    from crbook._layers import _BiasOnValue, _MaxPoolJet

    g = torch.Generator().manual_seed(34)
    out = torch.randn(6, 3, 4, 4, dtype=D, generator=g, requires_grad=True)
    bias = torch.randn(3, 1, 1, dtype=D, generator=g, requires_grad=True)

    def add(o, b):  # a clone: the function writes into its first argument
        return _BiasOnValue.apply(o.clone(), b, 2)

    assert torch.autograd.gradcheck(add, (out, bias))
    assert torch.autograd.gradgradcheck(add, (out, bias))
    assert torch.equal(add(out, bias)[2:], out[2:])

    c = torch.randn(3, 2, 2, 6, 6, dtype=D, generator=g, requires_grad=True)

    def pool(jet):
        return _MaxPoolJet.apply(jet, F.max_pool2d, 2, 3, 2, 1, 1, False)[0]

    assert torch.autograd.gradcheck(pool, (c,))
    assert torch.autograd.gradgradcheck(pool, (c,))


def test_compiled_pass_under_autograd_on_a_cnn():
    """compile=True in training: a convolutional network's derivatives and the
    gradients of a penalty on them match eager mode, for two batch sizes."""
    net = _overlap_cnn()
    y = _labels(5, 3)

    def run(count, compile):
        x, u = _inputs((count, 2, 9, 9), seed=35)
        net.zero_grad()
        d = crbook.directional_derivatives(
            lambda z: F.cross_entropy(net(z), y[:count], reduction="none"),
            x,
            u,
            3,
            compile=compile,
        )
        d[1:].abs().mean().backward()
        return d.detach(), [p.grad.clone() for p in net.parameters()]

    for count in (5, 3):
        (eager, eager_grads), (fused, fused_grads) = run(count, False), run(count, True)
        assert_close_per_order(fused, eager, 1e-12)
        for a, b in zip(fused_grads, eager_grads, strict=True):
            assert torch.allclose(a, b, rtol=1e-10, atol=1e-14)
