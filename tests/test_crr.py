"""The CRR penalty against the same penalty computed by hand with nested autograd."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import crbook

D = torch.float64


def _mlp(seed=0, dropout=0.0):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(3, 12), nn.Tanh(), nn.Dropout(dropout), nn.Linear(12, 4)
    ).to(D)


def _cnn(seed=0):
    """A tiny ReLU CNN with max-pooling: the paper's MNIST network in miniature."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 3, 3),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(12, 8),
        nn.Tanh(),
        nn.Linear(8, 3),
    ).to(D)


def _batch(shape=(6, 3), classes=4, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g, dtype=D)
    return x, torch.randint(classes, (shape[0],), generator=g)


def _unit(shape, g):
    u = torch.randn(shape, generator=g, dtype=D)
    return u / u.flatten(1).norm(dim=1).view((-1,) + (1,) * (u.dim() - 1))


def _derivative(model, x, y, u, n):
    """d^n/dt^n of the cross-entropy at x + t u, t = 0, one example, nested grads."""
    t = torch.zeros((), dtype=D, requires_grad=True)
    value = F.cross_entropy(model((x + t * u)[None]), y[None])
    for _ in range(n):
        (value,) = torch.autograd.grad(value, t, create_graph=True)
    return value


def _by_hand(model, x, y, orders, scale, directions, subset, seed):
    """The documented recipe: subset first, then one direction draw per pass."""
    g = torch.Generator().manual_seed(seed)
    if subset is not None:
        keep = torch.randperm(x.shape[0], generator=g)[:subset]
        x, y = x[keep], y[keep]
    if directions == "shared":
        u = _unit(x.shape, g)
        per_order = {n: u for n in orders}
    else:
        per_order = {n: _unit(x.shape, g) for n in orders}
    total = 0.0
    for n in orders:
        sizes = [
            _derivative(model, x[i], y[i], per_order[n][i], n).abs()
            for i in range(x.shape[0])
        ]
        total = total + torch.stack(sizes).mean()
    return scale * total / len(orders)


def _grads(model, value):
    return torch.autograd.grad(value, list(model.parameters()))


@pytest.mark.parametrize("directions", ["shared", "fresh"])
@pytest.mark.parametrize("subset", [None, 4])
def test_matches_nested_autograd_with_parameter_gradients(directions, subset):
    model = _mlp()
    x, y = _batch()
    orders = [1, 2, 4]
    got = crbook.crr_penalty(
        model, x, y, orders, 3.0, directions, subset, torch.Generator().manual_seed(7)
    )
    want = _by_hand(model, x, y, orders, 3.0, directions, subset, seed=7)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=0)
    for g_got, g_want in zip(_grads(model, got), _grads(model, want), strict=True):
        torch.testing.assert_close(g_got, g_want, rtol=1e-9, atol=1e-12)


def test_relu_cnn_matches_nested_autograd():
    model = _cnn()
    x, y = _batch((5, 1, 6, 6), classes=3)
    got = crbook.crr_penalty(
        model, x, y, (1, 2, 3), 2.0, generator=torch.Generator().manual_seed(3)
    )
    want = _by_hand(model, x, y, (1, 2, 3), 2.0, "shared", None, seed=3)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=0)
    for g_got, g_want in zip(_grads(model, got), _grads(model, want), strict=True):
        torch.testing.assert_close(g_got, g_want, rtol=1e-9, atol=1e-12)


def test_autograd_method_gives_the_same_penalty():
    model = _mlp()
    x, y = _batch()
    args = (model, x, y, (2, 3), 1.5)
    taylor = crbook.crr_penalty(*args, generator=torch.Generator().manual_seed(2))
    nested = crbook.crr_penalty(
        *args, generator=torch.Generator().manual_seed(2), method="autograd"
    )
    torch.testing.assert_close(taylor, nested, rtol=1e-10, atol=0)


def test_shared_and_fresh_differ_only_beyond_the_first_order():
    model = _mlp()
    x, y = _batch()

    def penalty(orders, directions):
        g = torch.Generator().manual_seed(4)
        return crbook.crr_penalty(model, x, y, orders, 1.0, directions, generator=g)

    # one order: both draw the same single direction
    torch.testing.assert_close(penalty([2], "shared"), penalty([2], "fresh"))
    # several: the second order sees another direction under "fresh"
    assert not torch.isclose(penalty([1, 2], "shared"), penalty([1, 2], "fresh"))


def test_whole_batch_subset_equals_no_subset():
    model = _mlp()
    x, y = _batch()
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    full = crbook.crr_penalty(model, x, y, (1, 2), 1.0, generator=g1)
    same = crbook.crr_penalty(model, x, y, (1, 2), 1.0, subset=x.shape[0], generator=g2)
    torch.testing.assert_close(full, same)


def test_scale_is_linear_and_zero_gives_an_exact_zero_without_running_the_model():
    model = _mlp()
    x, y = _batch()
    one = crbook.crr_penalty(
        model, x, y, (1, 2), 1.0, generator=torch.Generator().manual_seed(0)
    )
    five = crbook.crr_penalty(
        model, x, y, (1, 2), 5.0, generator=torch.Generator().manual_seed(0)
    )
    torch.testing.assert_close(five, 5 * one)

    calls = []
    model.register_forward_hook(lambda *args: calls.append(1))
    zero = crbook.crr_penalty(model, x, y, (1, 2), 0.0)
    assert zero.item() == 0.0 and zero.dtype == D and calls == []


def test_determinism_with_a_generator():
    model = _mlp()
    x, y = _batch()

    def penalty(seed):
        g = torch.Generator().manual_seed(seed)
        return crbook.crr_penalty(model, x, y, (1, 3), 1.0, "fresh", 4, g)

    assert penalty(11).item() == penalty(11).item()
    assert penalty(11).item() != penalty(12).item()


def test_the_model_mode_is_left_to_the_caller():
    model = _mlp(dropout=0.5)
    x, y = _batch()
    model.eval()
    first = crbook.crr_penalty(model, x, y, (1, 2), 1.0, generator=_seeded(0))
    again = crbook.crr_penalty(model, x, y, (1, 2), 1.0, generator=_seeded(0))
    assert not model.training and first.item() == again.item()

    model.train()
    torch.manual_seed(0)
    masked = crbook.crr_penalty(model, x, y, (1, 2), 1.0, generator=_seeded(0))
    assert model.training
    assert masked.item() != first.item()  # dropout was active


def _seeded(seed):
    return torch.Generator().manual_seed(seed)


def test_objective_gives_the_loss_and_the_penalty_of_one_pass():
    model = _mlp()
    x, y = _batch()
    loss, penalty = crbook.crr_objective(model, x, y, (1, 2, 3), 2.0, _seeded(5))
    want_penalty = crbook.crr_penalty(model, x, y, (1, 2, 3), 2.0, generator=_seeded(5))
    want_loss = F.cross_entropy(model(x), y)
    torch.testing.assert_close(loss, want_loss, rtol=1e-12, atol=0)
    torch.testing.assert_close(penalty, want_penalty, rtol=1e-12, atol=0)
    got = _grads(model, loss + penalty)
    want = _grads(model, want_loss + want_penalty)
    for g_got, g_want in zip(got, want, strict=True):
        torch.testing.assert_close(g_got, g_want, rtol=1e-10, atol=1e-13)

    loss0, zero = crbook.crr_objective(model, x, y, (1,), 0.0)
    torch.testing.assert_close(loss0, want_loss)
    assert zero.item() == 0.0


@pytest.mark.parametrize("chunks", [2, 3, 5])
def test_chunks_change_nothing_but_the_passes(chunks):
    """Each example's derivatives are its own: groups of examples give the same
    penalty, loss and gradients as the whole batch at once."""
    model = _cnn()
    x, y = _batch((10, 1, 6, 6), classes=3)
    whole = crbook.crr_objective(model, x, y, (1, 2, 4), 3.0, _seeded(2))
    split = crbook.crr_objective(model, x, y, (1, 2, 4), 3.0, _seeded(2), chunks=chunks)
    for got, want in zip(split, whole, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=0)
    got = _grads(model, split[0] + split[1])
    want = _grads(model, whole[0] + whole[1])
    for g_got, g_want in zip(got, want, strict=True):
        torch.testing.assert_close(g_got, g_want, rtol=1e-10, atol=1e-13)
    penalty = crbook.crr_penalty(
        model, x, y, (1, 3), 3.0, "fresh", 7, _seeded(4), chunks=chunks
    )
    reference = crbook.crr_penalty(model, x, y, (1, 3), 3.0, "fresh", 7, _seeded(4))
    torch.testing.assert_close(penalty, reference, rtol=1e-12, atol=0)


def test_a_training_step_with_the_penalty():
    model = _cnn()
    x, y = _batch((8, 1, 6, 6), classes=3)
    before = [p.detach().clone() for p in model.parameters()]
    loss = F.cross_entropy(model(x), y) + crbook.crr_penalty(
        model, x, y, (1, 2, 3, 4), 200.0, subset=4, generator=_seeded(0)
    )
    loss.backward()
    with torch.no_grad():  # a plain gradient step (an optimiser would do the same)
        for p in model.parameters():
            p -= 1e-2 * p.grad
    assert math.isfinite(loss.item())
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    moved = [
        not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True)
    ]
    assert all(moved)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"orders": []}, ValueError, "at least one order"),
        ({"orders": [0, 1]}, ValueError, "positive ints"),
        ({"orders": [1.0]}, ValueError, "positive ints"),
        ({"orders": [True]}, ValueError, "positive ints"),
        ({"orders": [2, 2]}, ValueError, "repeat"),
        ({"orders": 3}, TypeError, "sequence"),
        ({"scale": -1.0}, ValueError, "scale must be finite and >= 0"),
        ({"scale": math.inf}, ValueError, "scale must be finite"),
        ({"scale": math.nan}, ValueError, "scale must be finite"),
        ({"scale": "1"}, TypeError, "real number"),
        ({"directions": "random"}, ValueError, "directions must be one of"),
        ({"subset": 0}, ValueError, "between 1 and the batch size 6"),
        ({"subset": 7}, ValueError, "between 1 and the batch size 6"),
        ({"subset": 2.0}, TypeError, "subset must be an int"),
        ({"method": "finite"}, ValueError, "method must be"),
        ({"chunks": 0}, ValueError, "chunks must be between 1 and"),
        ({"chunks": 7}, ValueError, "penalised examples 6, got 7"),
        ({"chunks": 3, "subset": 2}, ValueError, "penalised examples 2, got 3"),
        ({"chunks": 2.0}, TypeError, "chunks must be an int"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    x, y = _batch()
    args = {"orders": (1, 2), "scale": 1.0} | kwargs
    with pytest.raises(error, match=match):
        crbook.crr_penalty(_mlp(), x, y, **args)


def test_bad_batches():
    model = _mlp()
    x, y = _batch()
    with pytest.raises(ValueError, match="one label per example"):
        crbook.crr_penalty(model, x, y[:3], (1,), 1.0)
    with pytest.raises(TypeError, match="integer class labels"):
        crbook.crr_penalty(model, x, y.double(), (1,), 1.0)
    with pytest.raises(TypeError, match="floating tensor"):
        crbook.crr_penalty(model, x[0], y, (1,), 1.0)
    with pytest.raises(ValueError, match="non-finite"):
        crbook.crr_penalty(model, x * math.inf, y, (1,), 1.0)
    with pytest.raises(ValueError, match="scale"):
        crbook.crr_objective(model, x, y, (1,), -2.0)
