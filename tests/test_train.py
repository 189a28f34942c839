"""The training loop: it learns, it is reproducible, and its cache is never stale."""

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from crbook import data
from crbook.models import MLP
from crbook.train import _needs_closure, default_cache, fit


@pytest.fixture(scope="module")
def moons():
    return data.two_moons(n=200, seed=0)  # 140 training, 60 test points


@pytest.fixture(autouse=True)
def _no_cache_from_environment(monkeypatch):
    monkeypatch.setenv("CRBOOK_CACHE", "off")


def _mlp(seed=0, **kwargs):
    torch.manual_seed(seed)
    return MLP((2, 16, 16, 2), **kwargs)


def _dropout_net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(2, 32), nn.Tanh(), nn.Dropout(0.3), nn.Linear(32, 2))


def _run(model, d, **kwargs):
    options = {"epochs": 2, "batch_size": 32, "progress": False, "cache": None}
    return fit(model, d, **{**options, **kwargs})


def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


class Penalty:
    """``scale * Σ p²`` over the weights, counting its calls."""

    def __init__(self, scale):
        self.scale = scale
        self.calls = 0

    @property
    def cache_key(self):
        return f"l2(scale={self.scale})"

    def __call__(self, model, x, y):
        self.calls += 1
        return self.scale * sum((p**2).sum() for p in model.parameters())


def test_loss_falls_and_history_matches_a_direct_evaluation(moons):
    model = _mlp()
    with torch.no_grad():
        before = F.cross_entropy(model(moons.x_test), moons.y_test).item()
    history = _run(model, moons, epochs=5)
    assert history.epochs == 5 and len(history.seconds) == 5
    assert history.train_loss[-1] < history.train_loss[0]
    assert history.test_loss[-1] < before - 0.1
    with torch.no_grad():
        logits = model(moons.x_test)
    assert history.test_loss[-1] == pytest.approx(
        F.cross_entropy(logits, moons.y_test).item(), rel=1e-5
    )
    accuracy = (logits.argmax(1) == moons.y_test).double().mean().item()
    assert history.test_accuracy[-1] == pytest.approx(accuracy)
    assert history.model is model and not history.cached
    assert all(v.device.type == "cpu" for v in history.state.values())
    assert history.penalty == [] and history.metrics == {}


def test_same_seed_same_run_other_seed_other_run(moons):
    a, b, c = _dropout_net(), _dropout_net(), _dropout_net()
    torch.manual_seed(100)  # the caller's random state must not matter
    ha = _run(a, moons, seed=3)
    torch.manual_seed(200)
    hb = _run(b, moons, seed=3)
    hc = _run(c, moons, seed=4)
    assert ha.train_loss == hb.train_loss and ha.test_loss == hb.test_loss
    assert _same_weights(a, b) and not _same_weights(a, c)
    assert ha.train_loss != hc.train_loss


def test_the_callers_random_state_is_left_alone(moons):
    model = _dropout_net()
    torch.manual_seed(5)
    state = torch.get_rng_state()
    _run(model, moons)
    assert torch.equal(state, torch.get_rng_state())


def test_one_sgd_step_equals_the_regularised_gradient_step(moons):
    model, reference = _mlp(1), _mlp(1)
    penalty = Penalty(0.05)
    n = moons.x_train.shape[0]
    history = _run(
        model,
        moons,
        epochs=1,
        batch_size=n,
        optimizer=("sgd", {"lr": 0.1}),
        regularizer=penalty,
    )
    loss = F.cross_entropy(reference(moons.x_train), moons.y_train)
    reg = 0.05 * sum((p**2).sum() for p in reference.parameters())
    grads = torch.autograd.grad(loss + reg, list(reference.parameters()))
    for p, g, q in zip(reference.parameters(), grads, model.parameters(), strict=True):
        torch.testing.assert_close(q, p - 0.1 * g, rtol=1e-5, atol=1e-6)
    assert penalty.calls == 1
    assert history.penalty == [pytest.approx(reg.item(), rel=1e-6)]
    assert history.train_loss == [pytest.approx(loss.item(), rel=1e-6)]


class ShiftedSGD(torch.optim.SGD):
    """Takes the gradient at ``p + shift``, found by calling the closure (SAM-like)."""

    requires_closure = True

    def __init__(self, params, lr, shift):
        super().__init__(params, lr=lr)
        self.shift = shift
        self.closures = 0

    @torch.no_grad()
    def step(self, closure=None):
        params = [p for group in self.param_groups for p in group["params"]]
        assert all(p.grad is not None for p in params)  # the first pass ran
        for p in params:
            p.add_(self.shift)
        with torch.enable_grad():
            closure()
        self.closures += 1
        for p in params:
            p.sub_(self.shift)
        return super().step()


def test_a_closure_optimizer_gets_a_closure_that_recomputes_the_gradient(moons):
    model, reference = _mlp(2), _mlp(2)
    made = []

    def factory(params):
        made.append(ShiftedSGD(params, lr=0.1, shift=0.01))
        return made[-1]

    factory.name = "shifted-sgd"
    n = moons.x_train.shape[0]
    history = _run(model, moons, epochs=1, batch_size=n, optimizer=factory)
    with torch.no_grad():
        for p in reference.parameters():
            p.add_(0.01)
    loss = F.cross_entropy(reference(moons.x_train), moons.y_train)
    grads = torch.autograd.grad(loss, list(reference.parameters()))
    for p, g, q in zip(reference.parameters(), grads, model.parameters(), strict=True):
        torch.testing.assert_close(q, p - 0.01 - 0.1 * g, rtol=1e-5, atol=1e-6)
    assert made[0].closures == 1 and history.optimizer == "shifted-sgd"


def test_which_optimizers_need_a_closure():
    params = [nn.Parameter(torch.zeros(2))]
    assert _needs_closure(torch.optim.LBFGS(params))
    assert not _needs_closure(torch.optim.Adam(params))
    assert _needs_closure(ShiftedSGD(params, lr=0.1, shift=0.0))


def test_lbfgs_trains(moons):
    def lbfgs(params):
        return torch.optim.LBFGS(params, lr=0.5, max_iter=3)

    history = _run(_mlp(), moons, epochs=2, batch_size=140, optimizer=lbfgs)
    assert history.optimizer == "lbfgs" and math.isfinite(history.train_loss[-1])
    assert history.train_loss[-1] < history.train_loss[0]


def test_callback_values_are_recorded_and_do_not_change_training(moons):
    seen_modes = []

    def callback(epoch, model, d):
        seen_modes.append(model.training)
        torch.randn(1000)  # randomness must not leak into the training
        norm = sum((p**2).sum() for p in model.parameters()).sqrt()
        return {"epoch": epoch, "norm": norm.detach(), "source": d.source}

    tracked, plain = _dropout_net(), _dropout_net()
    history = _run(tracked, moons, epochs=3, callback=callback)
    _run(plain, moons, epochs=3)
    assert _same_weights(tracked, plain)
    assert history.metrics["epoch"] == [1, 2, 3] and seen_modes == [False] * 3
    final = sum((p**2).sum() for p in tracked.parameters()).sqrt().item()
    assert history.metrics["norm"][-1] == pytest.approx(final)
    assert history.metrics["source"] == ["sklearn.make_moons"] * 3


class Tracker:
    """A callback with a stable cache key, returning a number and a vector."""

    cache_key = "tracker-v1"

    def __call__(self, epoch, model, d):
        return {"half": epoch / 2, "vector": torch.arange(3.0) * epoch}


def test_cache_hit_returns_the_same_run_without_training(moons, tmp_path):
    penalty = Penalty(1e-3)
    first_model = _mlp()
    options = {"epochs": 3, "regularizer": penalty, "callback": Tracker()}
    first = _run(first_model, moons, cache=tmp_path, **options)
    calls = penalty.calls
    assert calls == 3 * math.ceil(140 / 32) and not first.cached
    assert [p.name for p in tmp_path.iterdir()] == [f"fit-{first.key}.pt"]

    second_model = _mlp()
    second = _run(second_model, moons, cache=tmp_path, **options)
    assert second.cached and penalty.calls == calls
    assert second.metrics["half"] == [0.5, 1.0, 1.5]
    assert torch.equal(second.metrics["vector"][2], torch.tensor([0.0, 3.0, 6.0]))
    assert _same_weights(first_model, second_model)
    for name in ("train_loss", "test_loss", "test_accuracy", "penalty", "seconds"):
        assert getattr(first, name) == getattr(second, name)
    assert second.key == first.key and second.config == first.config


def test_an_unreadable_cache_file_is_a_miss(moons, tmp_path):
    penalty = Penalty(1e-3)
    first = _run(_mlp(), moons, regularizer=penalty, cache=tmp_path)
    (tmp_path / f"fit-{first.key}.pt").write_bytes(b"not a checkpoint")
    calls = penalty.calls
    again = _run(_mlp(), moons, regularizer=penalty, cache=tmp_path)
    assert not again.cached and penalty.calls == 2 * calls
    assert _run(_mlp(), moons, regularizer=penalty, cache=tmp_path).cached


def test_the_cache_folder_comes_from_the_environment(moons, tmp_path, monkeypatch):
    monkeypatch.setenv("CRBOOK_CACHE", str(tmp_path / "env"))
    fit(_mlp(), moons, epochs=1, progress=False)
    assert len(list((tmp_path / "env").iterdir())) == 1
    fit(_mlp(), moons, epochs=1, progress=False, cache=None)
    assert len(list((tmp_path / "env").iterdir())) == 1


def test_default_cache_folder(monkeypatch, tmp_path):
    monkeypatch.delenv("CRBOOK_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_cache() == tmp_path / ".cache" / "crbook" / "runs"
    for off in ("off", "", " OFF "):
        monkeypatch.setenv("CRBOOK_CACHE", off)
        assert default_cache() is None
    monkeypatch.setenv("CRBOOK_CACHE", str(tmp_path / "runs"))
    assert default_cache() == tmp_path / "runs"


def test_the_key_changes_with_every_setting(moons):
    noisy = data.two_moons(n=200, seed=0, label_noise=0.1)
    other_points = data.two_moons(n=200, seed=1)
    nudged = dataclasses.replace(moons, x_train=moons.x_train + 1e-6)

    def key(model=None, d=moons, **kwargs):
        model = _mlp() if model is None else model
        return _run(model, d, **{"epochs": 1, **kwargs}).key

    keys = {
        "base": key(),
        "epochs": key(epochs=2),
        "batch": key(batch_size=16),
        "lr": key(optimizer=("adam", {"lr": 2e-2})),
        "optimizer": key(optimizer=("sgd", {"lr": 1e-2})),
        "seed": key(seed=1),
        "label noise": key(d=noisy),
        "data seed": key(d=other_points),
        "data tensors": key(d=nudged),
        "init": key(_mlp(seed=1)),
        "architecture": key(_mlp(activation="gelu")),
        "regularizer": key(regularizer=Penalty(1e-3)),
        "regularizer scale": key(regularizer=Penalty(2e-3)),
        "callback": key(callback=Tracker()),
    }
    assert len(set(keys.values())) == len(keys)
    assert key() == keys["base"]


def test_a_diverging_run_raises_and_is_not_cached(moons, tmp_path):
    def nan_penalty(model, x, y):
        return torch.tensor(float("nan"))

    with pytest.raises(FloatingPointError, match="diverged in epoch 1"):
        _run(_mlp(), moons, regularizer=nan_penalty, cache=tmp_path)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"epochs": 0}, ValueError, "epochs"),
        ({"epochs": 1.5}, TypeError, "epochs"),
        ({"batch_size": 0}, ValueError, "batch_size"),
        ({"seed": -1}, ValueError, "seed"),
        ({"optimizer": ("nesterov", {})}, ValueError, "optimizer name"),
        ({"optimizer": ("adam", {"learning_rate": 1})}, TypeError, "adam"),
        ({"optimizer": 3}, TypeError, "optimizer"),
        ({"regularizer": "l2"}, TypeError, "regularizer"),
        ({"callback": 1}, TypeError, "callback"),
        ({"cache": 3}, TypeError, "cache"),
        ({"regularizer": lambda m, x, y: torch.ones(2)}, TypeError, "scalar"),
        ({"callback": lambda e, m, d: [1]}, TypeError, "dict"),
        ({"callback": lambda e, m, d: {"test_loss": 1}}, ValueError, "clash"),
        ({"callback": lambda e, m, d: {"k": object()}}, TypeError, "'k'"),
    ],
)
def test_bad_arguments_raise(moons, kwargs, error, match):
    with pytest.raises(error, match=match):
        _run(_mlp(), moons, **kwargs)


def test_callback_keys_must_stay_the_same(moons):
    def changing(epoch, model, d):
        return {f"k{epoch}": 1.0}

    with pytest.raises(ValueError, match="same every epoch"):
        _run(_mlp(), moons, callback=changing)


def test_bad_data_and_model_raise(moons):
    with pytest.raises(TypeError, match="x_train"):
        _run(_mlp(), object())
    float_labels = dataclasses.replace(moons, y_train=moons.y_train.float())
    with pytest.raises(ValueError, match="int64 labels"):
        _run(_mlp(), float_labels)
    with pytest.raises(TypeError, match="nn.Module"):
        _run(lambda x: x, moons)
