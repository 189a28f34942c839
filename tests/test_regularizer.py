"""crbook.CRR against a penalty computed by hand, and its place in the run cache."""

import dataclasses
import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import crbook
from crbook import data
from crbook.train import _describe, fit

D = torch.float64


def _dropout_mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(3, 10), nn.Tanh(), nn.Dropout(0.5), nn.Linear(10, 4)
    ).to(D)


def _batch(count=6, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(count, 3, generator=g, dtype=D), torch.randint(
        4, (count,), generator=g
    )


def _derivative(model, x, y, u, n):
    """d^n/dt^n of the cross-entropy at x + t u, t = 0, one example, nested grads."""
    t = torch.zeros((), dtype=D, requires_grad=True)
    value = F.cross_entropy(model((x + t * u)[None]), y[None])
    for _ in range(n):
        (value,) = torch.autograd.grad(value, t, create_graph=True)
    return value


def _by_hand(model, x, y, orders, scale, subset, seed):
    """The recipe from the global generator: subset, then one direction per order."""
    torch.manual_seed(seed)
    if subset is not None:
        keep = torch.randperm(x.shape[0])[:subset]
        x, y = x[keep], y[keep]
    total = 0.0
    for n in orders:
        u = torch.randn(x.shape, dtype=D)
        u = u / u.norm(dim=1, keepdim=True)
        sizes = [
            _derivative(model, x[i], y[i], u[i], n).abs() for i in range(x.shape[0])
        ]
        total = total + torch.stack(sizes).mean()
    return scale * total / len(orders)


def test_eval_mode_switches_dropout_off_and_restores_the_mode():
    model = _dropout_mlp()
    x, y = _batch()
    reg = crbook.CRR(
        orders=(1, 3), scale=2.5, directions="fresh", subset=4, eval_mode=True
    )
    model.train()
    torch.manual_seed(9)
    got = reg(model, x, y)
    assert model.training and all(m.training for m in model.modules())

    model.eval()  # the reference sees the network without dropout
    want = _by_hand(model, x, y, (1, 3), 2.5, subset=4, seed=9)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=0)
    grads = torch.autograd.grad(got, list(model.parameters()))
    want_grads = torch.autograd.grad(want, list(model.parameters()))
    for g_got, g_want in zip(grads, want_grads, strict=True):
        torch.testing.assert_close(g_got, g_want, rtol=1e-9, atol=1e-12)


def test_without_eval_mode_the_mode_is_left_alone():
    model = _dropout_mlp()
    x, y = _batch()
    model.train()
    model[2].eval()  # a submodule the caller froze on purpose
    reg = crbook.CRR(orders=(1, 2), scale=1.0)
    torch.manual_seed(0)
    reg(model, x, y)
    assert model.training and not model[2].training

    # with dropout active the penalty is not the evaluation-mode one
    model.train()
    torch.manual_seed(3)
    active = reg(model, x, y)
    torch.manual_seed(3)
    switched = dataclasses.replace(reg, eval_mode=True)(model, x, y)
    assert active.item() != switched.item()


def test_the_mode_is_restored_when_the_penalty_raises():
    model = _dropout_mlp()
    x, _ = _batch()
    model.train()
    with pytest.raises(ValueError, match="one label per example"):
        crbook.CRR(orders=(1,), scale=1.0, eval_mode=True)(
            model, x, torch.zeros(2, dtype=torch.int64)
        )
    assert model.training


def test_a_subset_larger_than_the_batch_uses_the_whole_batch():
    model = _dropout_mlp().eval()
    x, y = _batch(count=5)
    torch.manual_seed(4)
    got = crbook.CRR(orders=(2,), scale=1.0, subset=64)(model, x, y)
    want = _by_hand(model, x, y, (2,), 1.0, subset=None, seed=4)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=0)


def test_autograd_method_matches_taylor_mode():
    model = _dropout_mlp().eval()
    x, y = _batch()
    reg = crbook.CRR(orders=(1, 2, 3), scale=0.7)
    torch.manual_seed(2)
    taylor = reg(model, x, y)
    torch.manual_seed(2)
    nested = dataclasses.replace(reg, method="autograd")(model, x, y)
    torch.testing.assert_close(taylor, nested, rtol=1e-10, atol=0)


def test_cache_key_is_canonical_and_tells_every_setting_apart():
    base = crbook.CRR(orders=[2, 3], scale=1, directions="fresh", subset=64)
    same = crbook.CRR(orders=(2, 3), scale=1.0, directions="fresh", subset=64)
    assert base == same and base.cache_key == same.cache_key
    assert base.orders == (2, 3) and isinstance(base.scale, float)
    text = json.dumps(_describe(base), sort_keys=True)
    assert "0x" not in text and "crbook.CRR" in text  # no memory address
    changes = {
        "orders": (3, 2),
        "scale": 2.0,
        "directions": "shared",
        "subset": 32,
        "eval_mode": True,
        "method": "autograd",
    }
    keys = {json.dumps(base.cache_key, sort_keys=True)}
    for name, value in changes.items():
        changed = dataclasses.replace(base, **{name: value})
        keys.add(json.dumps(changed.cache_key, sort_keys=True))
    assert len(keys) == len(changes) + 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        base.scale = 3.0
    shared = crbook.CRR(orders=(1, 2), scale=1.0)
    variants = [shared, dataclasses.replace(shared, one_pass=True)]
    variants += [dataclasses.replace(v, chunks=2) for v in variants]
    assert len({json.dumps(v.cache_key, sort_keys=True) for v in variants}) == 4


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"orders": (), "scale": 1.0}, ValueError, "at least one order"),
        ({"orders": (0, 1), "scale": 1.0}, ValueError, "positive ints"),
        ({"orders": (1, 1), "scale": 1.0}, ValueError, "repeat"),
        ({"orders": (1,), "scale": -1.0}, ValueError, ">= 0"),
        ({"orders": (1,), "scale": "1"}, TypeError, "real number"),
        ({"orders": (1,), "scale": 1.0, "directions": "new"}, ValueError, "one of"),
        ({"orders": (1,), "scale": 1.0, "subset": 0}, ValueError, "at least 1"),
        ({"orders": (1,), "scale": 1.0, "subset": True}, TypeError, "int or None"),
        ({"orders": (1,), "scale": 1.0, "eval_mode": 1}, TypeError, "bool"),
        ({"orders": (1,), "scale": 1.0, "method": "jet"}, ValueError, "one of"),
        ({"orders": (1,), "scale": 1.0, "one_pass": 1}, TypeError, "bool"),
        ({"orders": (1,), "scale": 1.0, "chunks": 0}, ValueError, "at least 1"),
        ({"orders": (1,), "scale": 1.0, "chunks": 2.0}, TypeError, "an int"),
        ({"orders": (1,), "scale": 1.0, "chunks": True}, TypeError, "an int"),
    ]
    + [
        ({"orders": (1,), "scale": 1.0, "one_pass": True, **other}, ValueError, need)
        for other, need in (
            ({"directions": "fresh"}, "directions='shared'"),
            ({"subset": 8}, "subset=None"),
            ({"eval_mode": True}, "eval_mode=False"),
        )
    ],
)
def test_bad_settings_are_refused(kwargs, error, message):
    with pytest.raises(error, match=message):
        crbook.CRR(**kwargs)


def _moons_run(regularizer, cache=None, seed=0):
    torch.manual_seed(seed)
    model = crbook.models.MLP((2, 8, 2))
    moons = data.two_moons(n=120, label_noise=0.2, seed=0)
    return fit(
        model,
        moons,
        epochs=2,
        batch_size=32,
        regularizer=regularizer,
        progress=False,
        cache=cache,
    )


def test_scale_zero_trains_exactly_like_no_regulariser():
    plain = _moons_run(None)
    zero = _moons_run(crbook.CRR(orders=(2, 3), scale=0.0, directions="fresh"))
    assert plain.state.keys() == zero.state.keys()
    assert all(torch.equal(plain.state[k], zero.state[k]) for k in plain.state)
    assert zero.penalty == [0.0, 0.0]
    other = _moons_run(crbook.CRR(orders=(2, 3), scale=0.5, directions="fresh"))
    assert not all(torch.equal(plain.state[k], other.state[k]) for k in plain.state)


def test_fit_reuses_a_run_only_for_the_same_settings(tmp_path):
    reg = crbook.CRR(orders=(1, 2), scale=0.1, subset=16)
    first = _moons_run(reg, cache=tmp_path)
    again = _moons_run(crbook.CRR(orders=[1, 2], scale=0.1, subset=16), tmp_path)
    other = _moons_run(dataclasses.replace(reg, scale=0.2), cache=tmp_path)
    assert not first.cached and again.cached and not other.cached
    assert again.key == first.key != other.key


def test_one_pass_trains_like_two_passes_without_dropout():
    """Without dropout the loss of the Taylor pass is the forward pass's loss, and
    the directions come from the same draws, so both recipes train alike."""
    two = _moons_run(crbook.CRR(orders=(1, 2, 3), scale=0.5))
    one = _moons_run(crbook.CRR(orders=(1, 2, 3), scale=0.5, one_pass=True))
    # more groups than the last batch has examples: each group is one example
    many = _moons_run(crbook.CRR(orders=(1, 2, 3), scale=0.5, one_pass=True, chunks=30))
    for run in (one, many):
        for k in two.state:
            assert torch.allclose(run.state[k], two.state[k], rtol=1e-4, atol=1e-6)
        assert run.train_accuracy == two.train_accuracy
        assert run.train_loss == pytest.approx(two.train_loss, rel=1e-5)
        assert run.penalty == pytest.approx(two.penalty, rel=1e-5)
        assert min(run.penalty) > 0
    assert one.key != two.key != many.key


def test_objective_gives_the_logits_loss_and_penalty_of_crr_objective():
    model = _dropout_mlp()
    x, y = _batch(count=8)
    reg = crbook.CRR(orders=(1, 3), scale=2.0, one_pass=True, chunks=2)
    torch.manual_seed(5)
    logits, loss, penalty = reg.objective(model, x, y)
    torch.manual_seed(5)
    expected = crbook.crr_objective(model, x, y, (1, 3), 2.0, chunks=2)
    assert torch.equal(loss, expected[0]) and torch.equal(penalty, expected[1])
    assert loss.requires_grad and penalty.requires_grad
    assert logits.shape == (8, 4) and not logits.requires_grad
    # the logits are those the loss was computed from (same dropout masks)
    assert torch.allclose(F.cross_entropy(logits, y), loss, rtol=1e-12)
    model.eval()
    logits, _, _ = reg.objective(model, x, y)
    assert torch.allclose(logits, model(x), rtol=1e-12)
    with pytest.raises(ValueError, match="one_pass=True"):
        crbook.CRR(orders=(1,), scale=1.0).objective(model, x, y)


def test_one_pass_works_inside_sams_closure():
    """SAM's closure recomputes the objective at w + ε: with one_pass=True that is
    the Taylor pass's loss and penalty, and training stays finite."""
    torch.manual_seed(0)
    model = crbook.models.MLP((2, 8, 2))
    moons = data.two_moons(n=120, label_noise=0.2, seed=0)
    calls = []

    class Counting(crbook.CRR):
        def objective(self, model, x, y):
            calls.append(x.shape[0])
            return super().objective(model, x, y)

    def sam(params):
        return crbook.SAM(params, torch.optim.Adam, rho=0.05, lr=1e-2)

    sam.name = "sam"
    history = fit(
        model,
        moons,
        epochs=1,
        batch_size=32,
        optimizer=sam,
        regularizer=Counting(orders=(1, 2), scale=0.5, one_pass=True),
        progress=False,
        cache=None,
    )
    batches = -(-len(moons.y_train) // 32)
    assert len(calls) == 2 * batches  # at w, and again at w + ε
    assert min(history.penalty) > 0 and history.train_loss[0] > 0
