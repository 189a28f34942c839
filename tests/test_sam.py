"""SAM against steps worked out by hand on a linear model with a squared loss."""

import copy
import math

import pytest
import torch
from torch import nn

import crbook

D = torch.float64
RHO = 0.3


def _problem(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(10, 3, generator=g, dtype=D)
    y = torch.randn(10, 2, generator=g, dtype=D)
    model = nn.Linear(3, 2).to(D)
    with torch.no_grad():
        model.weight.copy_(torch.randn(2, 3, generator=g, dtype=D))
        model.bias.copy_(torch.randn(2, generator=g, dtype=D))
    return model, x, y


def _loss(model, x, y):
    return ((model(x) - y) ** 2).mean()


def _gradient(w, b, x, y):
    """Closed-form gradient of mean((x wᵀ + b − y)²) over all entries."""
    r = x @ w.T + b - y  # (N, 2)
    scale = 2 / r.numel()
    return scale * r.T @ x, scale * r.sum(0)


def _closure(opt, model, x, y):
    def closure():
        opt.zero_grad()
        loss = _loss(model, x, y)
        loss.backward()
        return loss

    return closure


def _perturbed_gradient(w, b, x, y, rho, adaptive):
    gw, gb = _gradient(w, b, x, y)
    if adaptive:
        norm = torch.cat([(w.abs() * gw).flatten(), b.abs() * gb]).norm()
        ew, eb = rho * w**2 * gw / norm, rho * b**2 * gb / norm
    else:
        norm = torch.cat([gw.flatten(), gb]).norm()
        ew, eb = rho * gw / norm, rho * gb / norm
    return _gradient(w + ew, b + eb, x, y)


@pytest.mark.parametrize("adaptive", [False, True])
def test_one_step_with_sgd_by_hand(adaptive):
    model, x, y = _problem()
    w, b = model.weight.detach().clone(), model.bias.detach().clone()
    opt = crbook.SAM(model.parameters(), torch.optim.SGD, RHO, adaptive, lr=0.1)
    loss = opt.step(_closure(opt, model, x, y))

    gw, gb = _perturbed_gradient(w, b, x, y, RHO, adaptive)
    torch.testing.assert_close(model.weight.detach(), w - 0.1 * gw, rtol=1e-13, atol=0)
    torch.testing.assert_close(model.bias.detach(), b - 0.1 * gb, rtol=1e-13, atol=0)
    assert all(p.grad is None for p in model.parameters())
    # the returned loss is the one at the perturbed weights, above the plain loss
    assert loss.item() > ((x @ w.T + b - y) ** 2).mean().item()


def test_uses_the_gradient_already_computed_when_there_is_one():
    model, x, y = _problem()
    w, b = model.weight.detach().clone(), model.bias.detach().clone()
    opt = crbook.SAM(model.parameters(), torch.optim.SGD, RHO, lr=0.1)
    calls = []

    def closure():
        calls.append(1)
        return _closure(opt, model, x, y)()

    _loss(model, x, y).backward()  # the usual loop computes it before step
    opt.step(closure)
    assert len(calls) == 1
    gw, _ = _perturbed_gradient(w, b, x, y, RHO, False)
    torch.testing.assert_close(model.weight.detach(), w - 0.1 * gw, rtol=1e-13, atol=0)


def test_adam_base_matches_adam_on_the_perturbed_gradient():
    model, x, y = _problem()
    reference = [p.detach().clone().requires_grad_() for p in model.parameters()]
    adam = torch.optim.Adam(reference, lr=0.05, betas=(0.8, 0.9))
    opt = crbook.SAM(
        model.parameters(), torch.optim.Adam, RHO, lr=0.05, betas=(0.8, 0.9)
    )
    for _ in range(3):  # the moments carry from step to step
        w, b = (p.detach() for p in reference)
        gw, gb = _perturbed_gradient(w, b, x, y, RHO, False)
        reference[0].grad, reference[1].grad = gw, gb
        adam.step()
        opt.step(_closure(opt, model, x, y))
        for mine, want in zip(model.parameters(), reference, strict=True):
            torch.testing.assert_close(mine.detach(), want.detach(), rtol=1e-12, atol=0)


def test_manual_first_and_second_step_equal_step():
    model, x, y = _problem()
    twin, _, _ = _problem()
    opt = crbook.SAM(model.parameters(), torch.optim.SGD, RHO, lr=0.1, momentum=0.9)
    manual = crbook.SAM(twin.parameters(), torch.optim.SGD, RHO, lr=0.1, momentum=0.9)
    for _ in range(2):
        opt.step(_closure(opt, model, x, y))
        _loss(twin, x, y).backward()
        manual.first_step(zero_grad=True)
        with manual.frozen_running_stats():
            _loss(twin, x, y).backward()
        manual.second_step(zero_grad=True)
    for a, b in zip(model.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_rho_zero_is_the_base_optimizer():
    model, x, y = _problem()
    twin, _, _ = _problem()
    opt = crbook.SAM(model.parameters(), torch.optim.Adam, 0.0, lr=0.05)
    adam = torch.optim.Adam(twin.parameters(), lr=0.05)
    for _ in range(3):
        opt.step(_closure(opt, model, x, y))
        _closure(adam, twin, x, y)()
        adam.step()
    for a, b in zip(model.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-14, atol=0)


def test_zero_gradient_gives_no_perturbation_and_no_nan():
    model = nn.Linear(2, 1, bias=False).to(D)
    opt = crbook.SAM(model.parameters(), torch.optim.SGD, RHO, lr=0.1)
    before = model.weight.detach().clone()

    def closure():
        opt.zero_grad()
        loss = (model.weight * 0).sum()
        loss.backward()
        return loss

    opt.step(closure)
    assert torch.equal(model.weight.detach(), before)


class _WithBatchNorm(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(3, 4)
        self.norm = nn.BatchNorm1d(4, momentum=0.5)

    def forward(self, x):
        return self.norm(self.linear(x))


@pytest.mark.parametrize("give_model", [True, False])
def test_batch_norm_statistics_are_updated_once_per_step(give_model):
    torch.manual_seed(0)
    model = _WithBatchNorm().to(D)
    x = torch.randn(16, 3, dtype=D)
    features = model.linear(x).detach()  # what the first pass normalises
    opt = crbook.SAM(
        model.parameters(),
        torch.optim.SGD,
        RHO,
        model=model if give_model else None,
        lr=0.1,
    )

    def closure():
        opt.zero_grad()
        loss = model(x).pow(3).mean()
        loss.backward()
        return loss

    opt.step(closure)  # no gradient yet: one pass at w, one at w + ε
    norm = model.norm
    if give_model:  # one update with momentum 0.5 from (0, 1), with batch stats at w
        mean = 0.5 * features.mean(0)
        var = 0.5 + 0.5 * features.var(0, unbiased=True)
        torch.testing.assert_close(norm.running_mean, mean, rtol=1e-12, atol=0)
        torch.testing.assert_close(norm.running_var, var, rtol=1e-12, atol=0)
        assert norm.num_batches_tracked.item() == 1
    else:  # without the model SAM cannot protect them: the second pass counts too
        assert norm.num_batches_tracked.item() == 2


def test_frozen_running_stats_restores_every_buffer():
    model = nn.Sequential(nn.BatchNorm1d(3), nn.Linear(3, 3), nn.BatchNorm1d(3))
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    with crbook.frozen_running_stats(model):
        model(torch.randn(8, 3))
        assert model[0].num_batches_tracked.item() == 1
    for key, value in model.state_dict().items():
        assert torch.equal(value, saved[key]), key


def test_state_dict_round_trip():
    model, x, y = _problem()
    opt = crbook.SAM(model.parameters(), torch.optim.Adam, RHO, lr=0.05)
    for _ in range(2):
        opt.step(_closure(opt, model, x, y))
    state = copy.deepcopy(opt.state_dict())  # torch's holds the live tensors
    assert state["param_groups"][0]["rho"] == RHO
    assert len(state["state"]) == 2  # Adam's moments of weight and bias

    twin, _, _ = _problem()
    twin.load_state_dict(model.state_dict())
    other = crbook.SAM(twin.parameters(), torch.optim.Adam, 0.9, lr=1.0)
    other.load_state_dict(state)
    assert other.param_groups is other.base_optimizer.param_groups
    assert other.param_groups[0]["rho"] == RHO and other.param_groups[0]["lr"] == 0.05
    opt.step(_closure(opt, model, x, y))
    other.step(_closure(other, twin, x, y))
    for a, b in zip(model.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_parameter_groups_keep_their_own_rho():
    model, x, y = _problem()
    w, b = model.weight.detach().clone(), model.bias.detach().clone()
    opt = crbook.SAM(
        [{"params": [model.weight]}, {"params": [model.bias], "rho": 0.0}],
        torch.optim.SGD,
        RHO,
        lr=0.1,
    )
    opt.step(_closure(opt, model, x, y))
    gw, gb = _gradient(w, b, x, y)
    ew = RHO * gw / torch.cat([gw.flatten(), gb]).norm()
    gw1, gb1 = _gradient(w + ew, b, x, y)
    torch.testing.assert_close(model.weight.detach(), w - 0.1 * gw1, rtol=1e-13, atol=0)
    torch.testing.assert_close(model.bias.detach(), b - 0.1 * gb1, rtol=1e-13, atol=0)


def test_errors():
    model, x, y = _problem()
    params = list(model.parameters())
    with pytest.raises(ValueError, match="rho must be finite and >= 0"):
        crbook.SAM(params, torch.optim.SGD, -0.1, lr=0.1)
    with pytest.raises(ValueError, match="rho must be finite"):
        crbook.SAM(params, torch.optim.SGD, math.nan, lr=0.1)
    with pytest.raises(TypeError, match="optimiser class"):
        crbook.SAM(params, torch.optim.SGD(params, lr=0.1))
    with pytest.raises(TypeError, match="adaptive must be a bool"):
        crbook.SAM(params, torch.optim.SGD, 0.1, "yes", lr=0.1)
    with pytest.raises(TypeError, match="bad"):
        crbook.SAM(params, torch.optim.SGD, 0.1, lr=0.1, bad=1)

    opt = crbook.SAM(params, torch.optim.SGD, lr=0.1)
    with pytest.raises(TypeError, match="needs a closure"):
        opt.step()
    with pytest.raises(RuntimeError, match="no gradients"):
        opt.first_step()
    with pytest.raises(RuntimeError, match="before first_step"):
        opt.second_step()
    _loss(model, x, y).backward()
    opt.first_step()
    with pytest.raises(RuntimeError, match="called twice"):
        opt.first_step()
