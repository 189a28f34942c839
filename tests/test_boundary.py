"""Selecting points near the decision boundary, on models with known probabilities."""

import pytest
import torch
from torch import nn

import crbook

D = torch.float64


class _Table(nn.Module):
    """Point ``i`` (its first coordinate) gets the probabilities ``probs[i]``."""

    def __init__(self, probs):
        super().__init__()
        self.register_buffer("logits", torch.as_tensor(probs, dtype=D).log())

    def forward(self, x):
        return self.logits[x[:, 0].long()]


def _two_class(top):
    """Two-class probabilities whose top class has probability ``top[i]``."""
    p = torch.tensor(top, dtype=D)
    return torch.stack([p, 1 - p], 1)


TOP = [0.9, 0.5, 0.52, 0.6, 0.66, 0.55, 0.99, 0.7]  # all >= 0.5: the top class


def _points(n):
    return torch.arange(n, dtype=D)[:, None]


def test_band_selects_by_hand():
    model = _Table(_two_class(TOP))
    x, y = _points(len(TOP)), torch.arange(len(TOP)) % 2
    got = crbook.boundary_points(model, x, y)
    want = [i for i, p in enumerate(TOP) if 0.45 <= p <= 0.65]
    assert got.indices.tolist() == want == [1, 2, 3, 5]
    assert not got.used_fallback and got.in_band == 4 and len(got) == 4
    torch.testing.assert_close(
        got.top_prob, torch.tensor([TOP[i] for i in want], dtype=D)
    )
    assert torch.equal(got.x, x[want]) and torch.equal(got.y, y[want])
    assert got.predicted.tolist() == [0, 0, 0, 0]


def test_band_ends_are_included():
    model = _Table(_two_class([0.5, 0.75, 0.9]))  # exact in binary
    got = crbook.boundary_points(model, _points(3), None, band=(0.5, 0.75))
    assert got.indices.tolist() == [0, 1] and got.y is None


def test_empty_band_falls_back_to_the_points_closest_to_a_half():
    model = _Table(_two_class(TOP))
    got = crbook.boundary_points(model, _points(8), None, band=(0.95, 0.97), fallback=3)
    # distances to 0.5: 0.4, 0, 0.02, 0.1, 0.16, 0.05, 0.49, 0.2 -> 1, 2, 5
    assert got.used_fallback and got.in_band == 0
    assert got.indices.tolist() == [1, 2, 5]
    every = crbook.boundary_points(model, _points(8), None, band=(0.95, 0.97))
    assert every.used_fallback and every.indices.tolist() == list(range(8))


def test_too_few_points_in_band_fall_back_when_asked():
    model = _Table(_two_class(TOP))
    got = crbook.boundary_points(
        model, _points(8), None, band=(0.58, 0.62), fallback=2, min_points=2
    )
    assert got.in_band == 1 and got.used_fallback and got.indices.tolist() == [1, 2]


def test_fallback_ties_go_to_the_earlier_index():
    model = _Table(_two_class([0.75, 0.75, 0.75, 0.9]))
    got = crbook.boundary_points(model, _points(4), None, band=(0.0, 0.1), fallback=2)
    assert got.indices.tolist() == [0, 1]


def test_many_classes_use_the_top_probability():
    probs = torch.tensor(
        [[0.3, 0.3, 0.4], [0.5, 0.25, 0.25], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6]],
        dtype=D,
    )
    got = crbook.boundary_points(_Table(probs), _points(4), None, band=(0.35, 0.55))
    assert got.indices.tolist() == [0, 1] and got.predicted.tolist() == [2, 0]


@pytest.mark.parametrize("start_training", [True, False])
def test_model_runs_in_eval_mode_without_grad_and_is_restored(start_training):
    model = nn.Sequential(_Table(_two_class(TOP)), nn.Dropout(0.9))
    model.train(start_training)
    x = _points(8).requires_grad_()
    got = crbook.boundary_points(model, x, None, batch_size=3)
    assert got.indices.tolist() == [1, 2, 3, 5]  # dropout would scramble this
    assert model.training is start_training
    assert not got.top_prob.requires_grad


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"band": (0.7, 0.4)}, ValueError),
        ({"band": (-0.1, 0.5)}, ValueError),
        ({"band": 0.5}, TypeError),
        ({"fallback": 0}, ValueError),
        ({"fallback": 2.0}, TypeError),
        ({"min_points": 0}, ValueError),
        ({"y": torch.zeros(3, dtype=torch.long)}, ValueError),
    ],
)
def test_bad_arguments_raise(kwargs, error):
    model = _Table(_two_class(TOP))
    args = {"y": None, **kwargs}
    with pytest.raises(error):
        crbook.boundary_points(model, _points(8), **args)
