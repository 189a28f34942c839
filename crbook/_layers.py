"""Taylor-mode rules for layers, reductions, losses and shape operations.

Linear layers and convolutions act on every coefficient at once (the coefficients
are folded into the batch axis); only the value ``c[0]`` receives the bias. These
maps, max-pooling and dropout keep the degree of their input. BatchNorm is an affine
map in evaluation mode; in training mode it couples the examples and is refused.

See chapter 1, Differentiation dynamics.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from crbook import _series as series
from crbook._jet import (
    Jet,
    _check_param,
    _coeffs,
    _lift,
    _map,
    _order,
    _rule,
    _shift_dim,
    _shift_dims,
    _unsupported,
)
from crbook._ops import _add, _div, _exp, _mul, _neg, _pow, _sub

# -- linear layers -----------------------------------------------------------------


class _BiasOnValue(torch.autograd.Function):
    """``out[:rows] += bias`` in place, for a tensor the layer's rule just made.

    Under autograd, an in-place write into a slice would make the backward pass
    copy the gradient of the whole jet (``CopySlices``), and adding the series
    ``(bias, 0, 0, ...)`` out of place would allocate one more jet-sized tensor.
    This function does neither: the forward pass writes the value rows only, the
    backward pass hands the gradient on as it is and sums the value rows for the
    bias.
    """

    @staticmethod
    def forward(ctx, out: Tensor, bias: Tensor, rows: int) -> Tensor:
        out[:rows].add_(bias)
        ctx.mark_dirty(out)
        ctx.rows = rows
        ctx.bias_shape = bias.shape
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, Tensor | None, None]:
        bias_grad = None
        if ctx.needs_input_grad[1]:
            bias_grad = grad[: ctx.rows].sum_to_size(ctx.bias_shape)
        return grad, bias_grad, None


def _add_bias(
    out: Tensor, bias: Tensor | None, shape: tuple[int, ...], rows: int = 1
) -> Tensor:
    """Add ``bias`` (viewed as ``shape``) to the value of a layer's output.

    ``out`` is a tensor the layer's rule just made, whose first ``rows`` entries
    along axis 0 hold the value ``c[0]``: ``1`` for a jet ``(d+1, B, ...)``, ``B``
    for one folded into the batch axis, ``((d+1)*B, ...)``.
    """
    if bias is None:
        return out
    b = bias.view(shape)
    if series._writable(out, bias):
        out[:rows].add_(b)
        return out
    if not series._is_compiling() and out._base is None:
        return _BiasOnValue.apply(out, b, rows)
    head, rest = out.split([rows, out.shape[0] - rows])  # functional, for tracing
    return torch.cat([head + b, rest])


@_rule(F.linear)
def _linear(x, weight, bias=None):
    _check_param(weight, "weight")
    _check_param(bias, "bias")
    return Jet(_add_bias(F.linear(x.coeffs, weight), bias, (-1,)), x.order)


def _conv(conv: Callable, dims: int) -> Callable:
    def rule(x, weight, bias=None, *args, **kwargs):
        _check_param(weight, "weight")
        _check_param(bias, "bias")
        c = x.coeffs
        out = conv(c.reshape((-1,) + tuple(c.shape[2:])), weight, None, *args, **kwargs)
        out = _add_bias(out, bias, (-1,) + (1,) * dims, rows=c.shape[1])
        return Jet(out.reshape(tuple(c.shape[:2]) + tuple(out.shape[1:])), x.order)

    return rule


_rule(F.conv1d)(_conv(F.conv1d, 1))
_rule(F.conv2d)(_conv(F.conv2d, 2))
_rule(F.conv3d)(_conv(F.conv3d, 3))


def _linear_map(op: Callable) -> Callable:
    def rule(x, *args, **kwargs):
        return _map(x, lambda c: op(c, *args, **kwargs))

    return rule


for _op in (
    F.avg_pool1d,
    F.avg_pool2d,
    F.avg_pool3d,
    F.adaptive_avg_pool1d,
    F.adaptive_avg_pool2d,
    F.adaptive_avg_pool3d,
):
    _rule(_op)(_linear_map(_op))


def _gather_rest(rest: Tensor, index: Tensor, dims: int) -> Tensor:
    """The coefficients ``rest`` (``(d, B, C, *spatial)``) at the value's maxima."""
    flat = index.flatten(-dims)
    picked = rest.flatten(-dims).gather(-1, flat.expand((rest.shape[0],) + flat.shape))
    return picked.view((rest.shape[0],) + tuple(index.shape))


class _MaxPoolJet(torch.autograd.Function):
    """Max-pooling of a jet: the value picks the maxima, the other coefficients
    are read at the same places.

    One function for the whole jet, so that the backward pass scatters the
    gradient of every coefficient into one zero tensor, instead of making one per
    piece and concatenating them.
    """

    @staticmethod
    def forward(ctx, c: Tensor, pool: Callable, dims: int, *args) -> tuple:
        value, index = pool(c[0], *args, return_indices=True)
        out = torch.cat([value[None], _gather_rest(c[1:], index, dims)])
        ctx.save_for_backward(index)
        ctx.mark_non_differentiable(index)
        ctx.dims, ctx.shape = dims, c.shape
        return out, index

    @staticmethod
    def backward(ctx, grad: Tensor, _: Tensor) -> tuple:
        (index,) = ctx.saved_tensors
        flat = index.flatten(-ctx.dims)
        grad_c = grad.new_zeros(ctx.shape).flatten(-ctx.dims)
        grad_c.scatter_add_(
            -1, flat.expand((grad.shape[0],) + flat.shape), grad.flatten(-ctx.dims)
        )
        return (grad_c.view(ctx.shape), None, None) + (None,) * 5


def _max_pool(pool: Callable, dims: int) -> Callable:
    def rule(
        x,
        kernel_size,
        stride=None,
        padding=0,
        dilation=1,
        ceil_mode=False,
        return_indices=False,
    ):
        c = x.coeffs
        args = (kernel_size, stride, padding, dilation, ceil_mode)
        if not series._is_compiling():
            out, index = _MaxPoolJet.apply(c, pool, dims, *args)
        else:  # functional, for tracing
            # split, not c[0] and c[1:]: the backward pass of indexing would zero
            # a tensor of the whole jet's size for each piece
            head, rest = c.split([1, c.shape[0] - 1])
            value, index = pool(head[0], *args, return_indices=True)
            out = torch.cat([value[None], _gather_rest(rest, index, dims)])
        out = Jet(out, x.order)
        return (out, index) if return_indices else out

    return rule


_rule(F.max_pool1d)(_max_pool(F.max_pool1d, 1))
_rule(F.max_pool2d)(_max_pool(F.max_pool2d, 2))
_rule(F.max_pool3d)(_max_pool(F.max_pool3d, 3))


def _dropout_rule(dropout: Callable) -> Callable:
    def rule(x, p=0.5, training=True, inplace=False):
        if not training or p == 0:
            return x
        mask = dropout(torch.ones_like(x.coeffs[0]), p, True)
        return Jet(x.coeffs * mask, x.order)

    return rule


for _op in (F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout):
    _rule(_op)(_dropout_rule(_op))


@_rule(F.batch_norm)
def _batch_norm(
    x,
    running_mean,
    running_var,
    weight=None,
    bias=None,
    training=False,
    momentum=0.1,
    eps=1e-5,
):
    if training or running_mean is None:
        raise _unsupported(
            "batch_norm in training mode (batch statistics couple the examples); "
            "call model.eval() first"
        )
    scale = torch.rsqrt(running_var + eps)
    if weight is not None:
        scale = scale * weight
    shift = -running_mean * scale
    if bias is not None:
        shift = shift + bias
    shape = (-1,) + (1,) * (x.ndim - 2)
    return Jet(_add_bias(x.coeffs * scale.view(shape), shift, shape), x.order)


@_rule(F.layer_norm)
def _layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    dims = tuple(range(-len(normalized_shape), 0))
    centred = _sub(x, _mean(x, dims, keepdim=True))
    var = _mean(_mul(centred, centred), dims, keepdim=True)
    out = _mul(centred, _pow(_add(var, eps), -0.5))
    if weight is not None:
        out = _mul(out, weight)
    return _add(out, bias) if bias is not None else out


# -- reductions, losses ------------------------------------------------------------


@_rule(torch.sum, torch.Tensor.sum)
def _sum(x, dim=None, keepdim=False, *, dtype=None):
    if dim is None:
        return Jet(x.coeffs.flatten(1).sum(1, dtype=dtype), x.order)
    return Jet(x.coeffs.sum(_shift_dims(dim), keepdim=keepdim, dtype=dtype), x.order)


@_rule(torch.mean, torch.Tensor.mean)
def _mean(x, dim=None, keepdim=False, *, dtype=None):
    if dim is None:
        return Jet(x.coeffs.flatten(1).mean(1, dtype=dtype), x.order)
    return Jet(x.coeffs.mean(_shift_dims(dim), keepdim=keepdim, dtype=dtype), x.order)


def _log_total(x: Jet, dim: int) -> tuple[Tensor, Tensor, Tensor]:
    """``(top, shifted, log_total)`` for a log-sum-exp of ``x`` along ``dim``.

    ``top`` is the whole series of each row's largest entry (chosen by value),
    ``shifted = x - top`` and ``log_total = log(sum(exp(shifted)))``, both with
    ``dim`` kept. Shifting by the top entry's series, not only by its value, keeps
    the higher coefficients free of cancellation where one entry dominates: the top
    entry's ``exp`` is exactly ``1``, the others sum to a small ``rest``, and
    ``log_total = log1p(rest)`` is small at every order, while ``logsumexp(x) -
    x[top]`` computed directly would subtract two nearly equal numbers at every
    order (in float32 the cross-entropy of a point with a logit margin of 12 would
    keep three or four digits instead of seven).
    """
    c = x.coeffs
    index = c[0].detach().argmax(dim, keepdim=True)
    d = _shift_dim(dim)
    top = c.gather(d, index.unsqueeze(0).expand((c.shape[0],) + tuple(index.shape)))
    shifted = c - top
    e = series.exp(shifted, x.order)
    others = e.scatter(d, index.unsqueeze(0).expand((e.shape[0],) + index.shape), 0.0)
    return top, shifted, series.log(others.sum(d, keepdim=True), x.order, True)


@_rule(torch.logsumexp, torch.Tensor.logsumexp)
def _logsumexp(x, dim, keepdim=False):
    dims = tuple(dim) if isinstance(dim, (tuple, list)) else (dim,)
    if len(dims) != 1:
        raise _unsupported("logsumexp over several dims at once")
    top, _, log_total = _log_total(x, dims[0])
    out = _add(Jet(top, x.order), Jet(log_total, x.order))
    if not keepdim:
        out = Jet(out.coeffs.squeeze(_shift_dim(dims[0])), x.order)
    return out


@_rule(torch.log_softmax, torch.Tensor.log_softmax, F.log_softmax)
def _log_softmax(x, dim=None, _stacklevel=3, dtype=None):
    if dim is None:
        raise _unsupported("log_softmax without an explicit dim")
    _, shifted, log_total = _log_total(x, dim)
    return _sub(Jet(shifted, x.order), Jet(log_total, x.order))


@_rule(torch.softmax, torch.Tensor.softmax, F.softmax)
def _softmax(x, dim=None, _stacklevel=3, dtype=None):
    return _exp(_log_softmax(x, dim))


def _pick(c: Tensor, target: Tensor) -> Tensor:
    """``c[:, i, target[i]]``: each example's target entry along axis 1 of ``x``."""
    index = target.unsqueeze(1)  # (B, 1, ...)
    index = index.unsqueeze(0).expand((c.shape[0],) + tuple(index.shape))
    return c.gather(2, index).squeeze(2)


def _reduce(loss: Jet, reduction: str) -> Jet:
    if reduction == "none":
        return loss
    if reduction == "sum":
        return _sum(loss)
    if reduction == "mean":
        return _mean(loss)
    raise ValueError(f"reduction must be 'none', 'mean' or 'sum', got {reduction!r}")


def _check_nll_options(weight, size_average, reduce, what):
    if weight is not None or size_average is not None or reduce is not None:
        raise _unsupported(f"{what} with weight, size_average or reduce")


def _masked_reduce(loss: Jet, keep: Tensor, reduction: str) -> Jet:
    """Zero the losses of ignored examples, then reduce as torch does."""
    loss = _mul(loss, keep.to(loss.dtype))
    if reduction == "mean":
        return _div(_sum(loss), keep.sum().to(loss.dtype))
    return _reduce(loss, reduction)


@_rule(F.nll_loss)
def _nll_loss(
    x,
    target,
    weight=None,
    size_average=None,
    ignore_index=-100,
    reduce=None,
    reduction="mean",
):
    _check_nll_options(weight, size_average, reduce, "nll_loss")
    keep = target != ignore_index
    picked = _pick(x.coeffs, torch.where(keep, target, 0))
    return _masked_reduce(_neg(Jet(picked, x.order)), keep, reduction)


@_rule(F.cross_entropy)
def _cross_entropy(
    x,
    target,
    weight=None,
    size_average=None,
    ignore_index=-100,
    reduce=None,
    reduction="mean",
    label_smoothing=0.0,
):
    if label_smoothing != 0.0 or target.is_floating_point():
        raise _unsupported("cross_entropy with label smoothing or soft targets")
    _check_nll_options(weight, size_average, reduce, "cross_entropy")
    keep = target != ignore_index
    _, shifted, log_total = _log_total(x, 1)
    picked = _pick(shifted, torch.where(keep, target, 0))
    loss = _sub(Jet(log_total.squeeze(2), x.order), Jet(picked, x.order))
    return _masked_reduce(loss, keep, reduction)


@_rule(F.mse_loss)
def _mse_loss(x, target, size_average=None, reduce=None, reduction="mean", weight=None):
    diff = _sub(x, target)
    return _reduce(_mul(diff, diff), reduction)


# -- shapes ------------------------------------------------------------------------


def _per_coefficient(method: str) -> Callable:
    """A rule for a shape operation that acts on each coefficient the same way."""

    def rule(x, *args, **kwargs):
        fn = getattr(torch.Tensor, method)
        return Jet(torch.vmap(lambda c: fn(c, *args, **kwargs))(x.coeffs), x.order)

    return rule


for _method in (
    "permute",
    "transpose",
    "expand",
    "expand_as",
    "repeat",
    "narrow",
    "select",
    "flip",
    "roll",
    "movedim",
    "chunk",
    "split",
    "unbind",
    "unflatten",
    "t",
    "diagonal",
    "tile",
    "index_select",
    "gather",
):
    _funcs = [getattr(torch.Tensor, _method), getattr(torch, _method, None)]
    _rule(*[f for f in _funcs if f is not None])(_per_coefficient(_method))


@_rule(torch.Tensor.view, torch.Tensor.reshape, torch.reshape)
def _reshape(x, *shape):
    if len(shape) == 1 and isinstance(shape[0], (tuple, list, torch.Size)):
        shape = tuple(shape[0])
    return Jet(x.coeffs.reshape((x.coeffs.shape[0],) + tuple(shape)), x.order)


@_rule(torch.Tensor.flatten, torch.flatten)
def _flatten(x, start_dim=0, end_dim=-1):
    if x.ndim == 0:
        return _reshape(x, (1,))
    return Jet(x.coeffs.flatten(_shift_dim(start_dim), _shift_dim(end_dim)), x.order)


@_rule(torch.Tensor.unsqueeze, torch.unsqueeze)
def _unsqueeze(x, dim):
    return Jet(x.coeffs.unsqueeze(dim + 1 if dim >= 0 else dim), x.order)


@_rule(torch.Tensor.squeeze, torch.squeeze)
def _squeeze(x, dim=None):
    if dim is None:
        keep = [0] + [i + 1 for i, s in enumerate(x.shape) if s != 1]
        shape = [x.coeffs.shape[i] for i in keep]
        return Jet(x.coeffs.reshape(shape), x.order)
    return Jet(x.coeffs.squeeze(_shift_dims(dim)), x.order)


@_rule(torch.Tensor.contiguous)
def _contiguous(x, memory_format=torch.contiguous_format):
    return Jet(x.coeffs.contiguous(), x.order)


@_rule(torch.Tensor.to, torch.Tensor.type_as)
def _to(x, *args, **kwargs):
    return Jet(x.coeffs.to(*args, **kwargs), x.order)


@_rule(torch.Tensor.float)
def _float(x, memory_format=torch.preserve_format):
    return Jet(x.coeffs.float(), x.order)


@_rule(torch.Tensor.double)
def _double(x, memory_format=torch.preserve_format):
    return Jet(x.coeffs.double(), x.order)


@_rule(torch.Tensor.detach)
def _detach(x):
    return Jet(x.coeffs.detach(), x.order)


@_rule(torch.Tensor.__getitem__)
def _getitem(x, index):
    if not isinstance(index, tuple):
        index = (index,)
    tensors = sum(isinstance(i, (Tensor, list)) for i in index)
    if tensors <= 1:
        return Jet(x.coeffs[(slice(None),) + index], x.order)
    return Jet(torch.vmap(lambda c: c[index])(x.coeffs), x.order)


@_rule(torch.cat, torch.concat, torch.concatenate)
def _cat(tensors, dim=0, *, out=None):
    order = _order(*tensors)
    top = max(t.degree if isinstance(t, Jet) else 0 for t in tensors)
    parts = []
    for t in tensors:
        c = t.coeffs if isinstance(t, Jet) else t[None]
        parts.append(series.pad(c, top))
    return Jet(torch.cat(parts, _shift_dim(dim)), order)


@_rule(torch.stack)
def _stack(tensors, dim=0, *, out=None):
    like = next(t for t in tensors if isinstance(t, Jet))
    return _cat([_unsqueeze(_lift(t, like), dim) for t in tensors], dim)


@_rule(torch.where)
def _where(condition, input, other):
    like = input if isinstance(input, Jet) else other
    a, b = _lift(input, like), _lift(other, like)
    top = max(a.degree, b.degree)
    ndim = max(a.ndim, b.ndim, condition.dim())
    ca, cb = series.pad(_coeffs(a, ndim), top), series.pad(_coeffs(b, ndim), top)
    return Jet(torch.where(condition, ca, cb), _order(input, other))
