"""Tests of crbook.worst_direction against eigenvectors, closed forms and scans."""

import math

import pytest
import torch
import torch.nn.functional as F

import crbook
from crbook.models import MLP


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def random_symmetric(size: int, seed: int) -> torch.Tensor:
    a = torch.randn(size, size, dtype=torch.float64, generator=gen(seed))
    return (a + a.T) / 2


# -- order 2: the extreme eigenvector of the Hessian -------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_quadratic_form_gives_the_eigenvector_of_largest_modulus(seed):
    a = random_symmetric(6, seed)
    b = torch.randn(6, dtype=torch.float64, generator=gen(10 + seed))

    def quadratic(z):  # Hessian a everywhere, so d_2(u) = u^T a u
        return 0.5 * ((z @ a) * z).sum(1) + z @ b

    x = torch.randn(3, 6, dtype=torch.float64, generator=gen(20 + seed))
    found = crbook.worst_direction(
        quadratic,
        x,
        None,
        2,
        iterations=500,
        generator=gen(seed),
        starts=8,
        tol=1e-7,
        quantity="output",
    )
    eigenvalues, vectors = torch.linalg.eigh(a)
    top = eigenvalues.abs().argmax()
    expected = eigenvalues[top].expand(3)
    assert torch.allclose(found.values, expected, rtol=1e-10, atol=0)
    overlap = (found.directions @ vectors[:, top]).abs()
    assert torch.allclose(overlap, torch.ones(3, dtype=torch.float64), atol=1e-6)
    assert bool(found.converged.all())


def test_definite_quadratic_form_needs_one_start():
    a = random_symmetric(5, 3)
    a = a @ a.T + 0.1 * torch.eye(5, dtype=torch.float64)  # positive definite
    x = torch.zeros(2, 5, dtype=torch.float64)
    found = crbook.worst_direction(
        lambda z: ((z @ a) * z).sum(1),
        x,
        None,
        2,
        iterations=500,
        generator=gen(0),
        starts=1,
        tol=1e-7,
        quantity="output",
    )
    largest = torch.linalg.eigvalsh(a)[-1]
    assert torch.allclose(found.values, 2 * largest.expand(2), rtol=1e-10)


# -- orders 3 and 4: closed forms --------------------------------------------------


@pytest.mark.parametrize("order", [3, 4])
def test_exponential_of_a_projection(order):
    # f(x) = exp(a.x): d_n(u) = (a.u)^n exp(a.x), largest at u = ±a/|a|.
    a = torch.tensor([1.0, 2.0, -0.5, 0.25], dtype=torch.float64)
    x = torch.randn(5, 4, dtype=torch.float64, generator=gen(order))
    found = crbook.worst_direction(
        lambda z: torch.exp(z @ a), x, None, order, quantity="output"
    )
    expected = a.norm() ** order * torch.exp(x @ a)
    assert torch.allclose(found.values, expected, rtol=1e-12)
    overlap = (found.directions @ (a / a.norm())).abs()
    assert torch.allclose(overlap, torch.ones(5, dtype=torch.float64), atol=1e-7)
    if order % 2 == 1:  # odd order: oriented to a positive value
        assert torch.allclose(found.directions, (a / a.norm()).expand(5, 4))


def test_orthogonally_decomposable_cubic():
    # f(x) = sum_i c_i (w_i . x)^3 with orthonormal w_i: d_3(u) = 6 sum_i c_i
    # (w_i . u)^3, whose largest modulus on the sphere is 6 max|c_i|, at the w_i
    # of the largest |c_i| (the other w_i are local maxima).
    w, _ = torch.linalg.qr(torch.randn(5, 3, dtype=torch.float64, generator=gen(4)))
    c = torch.tensor([3.0, -5.0, 1.0], dtype=torch.float64)

    def cubic(z):
        return ((z @ w) ** 3 @ c).reshape(-1)

    x = torch.randn(4, 5, dtype=torch.float64, generator=gen(5))
    found = crbook.worst_direction(
        cubic,
        x,
        None,
        3,
        iterations=200,
        generator=gen(6),
        starts=12,
        quantity="output",
    )
    assert torch.allclose(found.values, torch.full((4,), 30.0, dtype=torch.float64))
    # oriented to a positive value: c_2 < 0, so u = -w_2
    expected = -w[:, 1].expand(4, 5)
    assert torch.allclose(found.directions, expected, atol=1e-6)


# -- a network: against a scan of every direction with nested autograd -------------


@pytest.mark.parametrize("order", [2, 3, 4])
def test_two_dimensional_network_matches_a_scan_of_all_directions(order):
    torch.manual_seed(0)
    model = MLP((2, 8, 8, 2)).double()
    x = torch.randn(3, 2, dtype=torch.float64, generator=gen(7))
    y = torch.tensor([0, 1, 1])
    found = crbook.worst_direction(model, x, y, order, generator=gen(8))

    angles = torch.linspace(0, math.pi, 721, dtype=torch.float64)[:-1]
    circle = torch.stack([angles.cos(), angles.sin()], 1)  # (A, 2)
    for i in range(3):
        labels = y[i].repeat(angles.numel())

        def loss(z, labels=labels):
            return F.cross_entropy(model(z), labels, reduction="none")

        scan = crbook.directional_derivatives(
            loss, x[i].expand(angles.numel(), 2), circle, order, method="autograd"
        )[order].detach()
        best = scan.abs().max()
        value = found.values[i].abs()
        # the scan's step of π/720 misses the peak by a relative (π/720)^2 at most
        assert best * (1 - 1e-12) <= value <= best * (1 + 2e-5), (i, best, value)


def test_values_are_the_derivatives_along_the_directions():
    torch.manual_seed(1)
    model = MLP((3, 16, 2)).double()
    x = torch.randn(4, 3, dtype=torch.float64, generator=gen(9))
    y = torch.tensor([0, 1, 0, 1])
    found = crbook.worst_direction(model, x, y, 3, generator=gen(10))
    norms = found.directions.norm(dim=1)
    assert torch.allclose(norms, torch.ones(4, dtype=torch.float64))

    def loss(z):
        return F.cross_entropy(model(z), y, reduction="none")

    u = found.directions
    d = crbook.directional_derivatives(loss, x, u, 3, method="autograd")[3]
    d = d.detach()
    assert torch.allclose(found.values, d, rtol=1e-10)
    assert bool((found.values > 0).all())


# -- monotonicity and convergence ------------------------------------------------


@pytest.mark.parametrize("order", [2, 3, 4])
def test_objective_never_decreases_and_converges(order):
    torch.manual_seed(2)
    model = MLP((10, 16, 16, 3)).double()
    x = torch.randn(5, 10, dtype=torch.float64, generator=gen(11))
    found = crbook.worst_direction(
        model, x, None, order, iterations=200, generator=gen(12), starts=2
    )
    steps = found.history.diff(dim=0)  # (iterations, B)
    assert bool((steps >= 0).all()), steps.min()
    assert bool((found.history[-1] > found.history[0]).all())
    assert torch.equal(found.history[-1], found.values.abs())
    assert bool(found.converged.all()), found
    assert bool((found.residual < 1e-7).all())
    assert bool((found.iterations < 200).all())


def test_first_order_is_the_normalised_gradient():
    torch.manual_seed(3)
    model = MLP((4, 8, 2)).double()
    x = torch.randn(3, 4, dtype=torch.float64, generator=gen(13), requires_grad=True)
    y = torch.tensor([1, 0, 1])
    found = crbook.worst_direction(model, x.detach(), y, 1, generator=gen(14))
    (grad,) = torch.autograd.grad(
        F.cross_entropy(model(x), y, reduction="sum"), x
    )  # rows are the per-example gradients
    assert torch.allclose(found.values, grad.norm(dim=1), rtol=1e-12)
    expected = grad / grad.norm(dim=1, keepdim=True)
    assert torch.allclose(found.directions, expected, atol=1e-12)
    assert bool((found.iterations == 1).all())


def test_model_mode_is_restored():
    model = MLP((2, 4, 2))
    model.train()
    crbook.worst_direction(model, torch.randn(2, 2), None, 2, iterations=2)
    assert model.training


# -- bad input -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"order": 0}, ValueError, "order must be at least 1"),
        ({"order": 2.0}, TypeError, "order must be an int"),
        ({"iterations": 0}, ValueError, "iterations must be at least 1"),
        ({"starts": 0}, ValueError, "starts must be at least 1"),
        ({"tol": -1.0}, ValueError, "tol must be a positive number"),
        ({"quantity": "margin"}, ValueError, "quantity must be one of"),
        ({"y": torch.tensor([0])}, ValueError, "one label per point"),
        ({"quantity": "output", "y": torch.tensor([0, 1])}, ValueError, "no labels"),
        ({"x": torch.zeros(2, 2, dtype=torch.int64)}, TypeError, "floating tensor"),
    ],
)
def test_bad_input_is_refused(kwargs, error, message):
    arguments = {"x": torch.zeros(2, 2), "y": None, "order": 2}
    arguments.update(kwargs)
    with pytest.raises(error, match=message):
        crbook.worst_direction(MLP((2, 4, 2)), **arguments)


def test_output_of_the_wrong_shape_is_refused():
    with pytest.raises(ValueError, match="one value per example"):
        crbook.worst_direction(
            lambda z: z**2, torch.ones(2, 3), None, 2, quantity="output"
        )
