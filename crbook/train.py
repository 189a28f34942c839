"""One training loop for every chapter, with results cached by configuration.

:func:`fit` trains a classifier with cross-entropy and any optimiser, plus an
optional regulariser added to the loss (the book's CRR plugs in here) and an
optional per-epoch callback whose numbers join the :class:`History` (λ tracking).
Optimisers that need a closure, such as SAM, are given one.

A finished run can be stored on disk. Its file name is the SHA-256 of a canonical
JSON of the whole configuration: the model's class, repr and initial weights, the
data's settings and tensors, the epochs, batch size, optimiser and its
hyperparameters, the seed, the regulariser and callback, and the crbook version.
A second call with the same configuration loads the trained weights and history
instead of training; any change gives another key, so a result is never reused
for a configuration that did not produce it.

See chapter 4, λ of a network.

Limitations
-----------
The cache key leaves out the device and the PyTorch version: a run cached on a GPU
is reused on a CPU. A regulariser, callback or optimiser factory without a
``cache_key`` enters the key through its ``repr``; when that repr holds a memory
address (a lambda, a plain function object's instance), the key differs in every
process, so such runs are cached within one session only. Runs on a GPU are
reproducible only as far as its kernels are deterministic.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["History", "cache_key", "default_cache", "fit"]

_OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "sgd": torch.optim.SGD,
    "rmsprop": torch.optim.RMSprop,
    "adagrad": torch.optim.Adagrad,
}
_BUILT_IN = ("train_loss", "train_accuracy", "test_loss", "test_accuracy", "seconds")
_EVAL_BATCH = 1000
_FORMAT = 1


class _FromEnvironment:
    """Default of ``fit(cache=...)``: ``$CRBOOK_CACHE``, else ``~/.cache/crbook/runs``.

    ``CRBOOK_CACHE=off`` switches the default cache off.
    """

    def __repr__(self) -> str:
        return "<$CRBOOK_CACHE or ~/.cache/crbook/runs>"


_FROM_ENV: Any = _FromEnvironment()


@dataclass(eq=False)
class History:
    """What :func:`fit` returns: one entry per epoch, and the trained model.

    Attributes
    ----------
    train_loss, train_accuracy : list of float
        Cross-entropy (without the regulariser) and accuracy on the training
        batches, averaged over the epoch while the weights change, in training
        mode (dropout active).
    test_loss, test_accuracy : list of float
        Cross-entropy and accuracy on the whole test set after the epoch, in
        evaluation mode.
    penalty : list of float
        The regulariser's mean value per batch (empty without a regulariser).
    seconds : list of float
        Wall-clock seconds of each epoch (training and test evaluation, not the
        callback). A cached history keeps the times of the run that made it.
    metrics : dict of str to list
        The callback's values, one list per key, one entry per epoch.
    model : nn.Module
        The trained model (the object passed to :func:`fit`).
    state : dict of str to Tensor
        The trained weights and buffers, on the CPU.
    config : dict
        The configuration behind the cache key.
    key : str
        The cache key (SHA-256 hex of the canonical JSON of ``config``).
    optimizer : str
        The optimiser's name.
    device : str
        Where the run trained.
    cached : bool
        True when the run was loaded from the cache instead of trained.
    """

    train_loss: list[float] = field(default_factory=list)
    train_accuracy: list[float] = field(default_factory=list)
    test_loss: list[float] = field(default_factory=list)
    test_accuracy: list[float] = field(default_factory=list)
    penalty: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    metrics: dict[str, list[Any]] = field(default_factory=dict)
    model: nn.Module | None = None
    state: dict[str, Tensor] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    key: str = ""
    optimizer: str = ""
    device: str = ""
    cached: bool = False

    @property
    def epochs(self) -> int:
        """Number of epochs recorded."""
        return len(self.train_loss)

    def __repr__(self) -> str:
        if not self.epochs:
            return "History(no epochs)"
        cached = ", from cache" if self.cached else ""
        return (
            f"History({self.epochs} epochs with {self.optimizer}{cached}: train loss "
            f"{self.train_loss[-1]:.4f}, test accuracy {self.test_accuracy[-1]:.4f}, "
            f"{sum(self.seconds):.1f} s)"
        )

    def _record(self) -> dict[str, Any]:
        names = ("train_loss", "train_accuracy", "test_loss", "test_accuracy")
        record = {name: getattr(self, name) for name in names}
        record.update(
            penalty=self.penalty,
            seconds=self.seconds,
            metrics=self.metrics,
            config_json=_canonical(self.config),
            key=self.key,
            optimizer=self.optimizer,
            device=self.device,
        )
        return record


# -- the cache key -----------------------------------------------------------------


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=repr)


def _hash_tensors(named: list[tuple[str, Tensor]]) -> str:
    digest = hashlib.sha256()
    for name, tensor in named:
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _describe(obj: Any) -> Any:
    """How a regulariser, callback or optimiser factory enters the key."""
    if obj is None:
        return None
    key = getattr(obj, "cache_key", None)
    if key is not None:
        return key() if callable(key) else key
    return repr(obj)


def cache_key(config: Mapping[str, Any]) -> str:
    """SHA-256 hex digest of the canonical JSON of a run's configuration."""
    return hashlib.sha256(_canonical(dict(config)).encode()).hexdigest()


def _data_tensors(data: Any) -> list[tuple[str, Tensor]]:
    names = ("x_train", "y_train", "x_test", "y_test")
    return [(name, getattr(data, name)) for name in names]


def _configuration(
    model: nn.Module,
    data: Any,
    epochs: int,
    batch_size: int,
    optimizer: dict[str, Any],
    seed: int,
    regularizer: Any,
    callback: Any,
) -> dict[str, Any]:
    import crbook

    config_fn = getattr(data, "config", None)
    kind = type(model)
    return {
        "crbook": crbook.__version__,
        "model": {
            "class": f"{kind.__module__}.{kind.__qualname__}",
            "repr": repr(model),
            "initial_state": _hash_tensors(sorted(model.state_dict().items())),
        },
        "data": {
            "config": config_fn() if callable(config_fn) else None,
            "tensors": _hash_tensors(_data_tensors(data)),
        },
        "epochs": epochs,
        "batch_size": batch_size,
        "optimizer": optimizer,
        "seed": seed,
        "regularizer": _describe(regularizer),
        "callback": _describe(callback),
    }


# -- checks and set-up ---------------------------------------------------------------


def _check_int(name: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < low:
        raise ValueError(f"{name} must be at least {low}, got {value}")


def _check_data(data: Any) -> None:
    for name, value in _data_tensors_or_raise(data):
        if not isinstance(value, Tensor):
            raise TypeError(f"data.{name} must be a tensor, got {type(value)}")
    for part in ("train", "test"):
        x, y = getattr(data, f"x_{part}"), getattr(data, f"y_{part}")
        if not x.is_floating_point():
            raise TypeError(f"data.x_{part} must be floating, got {x.dtype}")
        if y.dtype != torch.int64 or y.shape != x.shape[:1]:
            raise ValueError(
                f"data.y_{part} must be int64 labels of shape ({x.shape[0]},), got "
                f"{y.dtype} {tuple(y.shape)}"
            )
    if data.x_train.shape[0] == 0 or data.x_test.shape[0] == 0:
        raise ValueError("data must hold at least one training and one test point")


def _data_tensors_or_raise(data: Any) -> list[tuple[str, Any]]:
    names = ("x_train", "y_train", "x_test", "y_test")
    missing = [name for name in names if not hasattr(data, name)]
    if missing:
        raise TypeError(
            f"data must have x_train, y_train, x_test and y_test (a "
            f"crbook.data.Dataset), missing {missing}"
        )
    return [(name, getattr(data, name)) for name in names]


def _make_optimizer(
    spec: Any, params: list[nn.Parameter]
) -> tuple[torch.optim.Optimizer, dict[str, Any]]:
    if isinstance(spec, tuple):
        if len(spec) != 2 or not isinstance(spec[0], str):
            raise TypeError(
                f"optimizer must be (name, hyperparameters) or a callable, got {spec!r}"
            )
        if not isinstance(spec[1], Mapping):
            raise TypeError(
                f"optimizer hyperparameters must be a dict, got {spec[1]!r}"
            )
        name, kwargs = spec[0].lower(), dict(spec[1])
        if name not in _OPTIMIZERS:
            raise ValueError(
                f"optimizer name must be one of {sorted(_OPTIMIZERS)}, got {spec[0]!r}"
            )
        try:
            optimizer = _OPTIMIZERS[name](params, **kwargs)
        except TypeError as error:
            raise TypeError(f"bad hyperparameters for {name}: {error}") from None
        factory = None
    elif callable(spec):
        optimizer = spec(params)
        if not isinstance(optimizer, torch.optim.Optimizer) and not callable(
            getattr(optimizer, "step", None)
        ):
            raise TypeError(
                f"the optimizer factory must return an optimizer, got {optimizer!r}"
            )
        name = getattr(spec, "name", None) or type(optimizer).__name__.lower()
        factory = _describe(spec)
    else:
        raise TypeError(
            "optimizer must be (name, hyperparameters), e.g. ('adam', {'lr': 1e-3}), "
            f"or a callable params -> optimizer with a name; got {spec!r}"
        )
    kind = type(optimizer)
    described = {
        "name": name,
        "class": f"{kind.__module__}.{kind.__qualname__}",
        "defaults": getattr(optimizer, "defaults", None),
        "factory": factory,
    }
    return optimizer, described


def _needs_closure(optimizer: Any) -> bool:
    """True when ``optimizer.step`` must be given a closure (SAM, L-BFGS)."""
    flag = getattr(optimizer, "requires_closure", None)
    if flag is not None:
        return bool(flag)
    try:
        parameter = inspect.signature(optimizer.step).parameters.get("closure")
    except (TypeError, ValueError):
        return False
    return parameter is not None and parameter.default is inspect.Parameter.empty


def _choose_device(device: Any) -> torch.device:
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def default_cache() -> Path | None:
    """The folder ``fit`` caches runs in by default.

    ``$CRBOOK_CACHE`` when it is set (``off`` or an empty value: no cache), else
    ``~/.cache/crbook/runs``. Rebuilding the book therefore reuses finished runs.
    """
    value = os.environ.get("CRBOOK_CACHE")
    if value is None:
        return Path("~/.cache/crbook/runs").expanduser()
    if value.strip().lower() in ("", "off"):
        return None
    return Path(value).expanduser()


def _cache_dir(cache: Any) -> Path | None:
    if cache is _FROM_ENV:
        cache = default_cache()
    if cache is None:
        return None
    if not isinstance(cache, (str, os.PathLike)):
        raise TypeError(f"cache must be a folder path or None, got {cache!r}")
    return Path(cache).expanduser()


def _plain(name: str, value: Any) -> Any:
    """A callback value as a float, int, str or CPU tensor (safe to store)."""
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    if isinstance(value, (np.generic, np.ndarray)):
        value = torch.as_tensor(np.asarray(value))
    if isinstance(value, Tensor):
        value = value.detach().cpu()
        return value.item() if value.numel() == 1 and value.dim() == 0 else value
    raise TypeError(
        f"callback value {name!r} must be a number, string or tensor, got "
        f"{type(value).__name__}"
    )


# -- the loop ------------------------------------------------------------------------


def _evaluate(model: nn.Module, x: Tensor, y: Tensor) -> tuple[float, float]:
    model.eval()
    loss = torch.zeros((), dtype=torch.float64, device=x.device)
    correct = torch.zeros((), dtype=torch.int64, device=x.device)
    with torch.no_grad():
        for xb, yb in zip(x.split(_EVAL_BATCH), y.split(_EVAL_BATCH), strict=True):
            logits = model(xb)
            loss += F.cross_entropy(logits, yb, reduction="sum").double()
            correct += (logits.argmax(1) == yb).sum()
    return loss.item() / y.shape[0], correct.item() / y.shape[0]


def _store(path: Path, history: History) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}.{os.getpid()}.part")
    torch.save(
        {"format": _FORMAT, "state": history.state, "history": history._record()},
        partial,
    )
    os.replace(partial, path)


def _load(path: Path, key: str) -> tuple[dict[str, Tensor], dict[str, Any]] | None:
    try:
        stored = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # an unreadable file is a miss, never a result
        return None
    if stored.get("format") != _FORMAT or stored["history"].get("key") != key:
        return None
    return stored["state"], stored["history"]


def fit(
    model: nn.Module,
    data: Any,
    *,
    epochs: int,
    batch_size: int = 128,
    optimizer: Any = ("adam", {"lr": 1e-2}),
    seed: int = 0,
    regularizer: Callable[[nn.Module, Tensor, Tensor], Tensor] | None = None,
    callback: Callable[[int, nn.Module, Any], Mapping[str, Any]] | None = None,
    device: str | torch.device | None = None,
    progress: bool = True,
    cache: str | os.PathLike[str] | None = _FROM_ENV,
) -> History:
    """Train ``model`` on ``data`` with cross-entropy, or load the cached run.

    Each epoch shuffles the training set with a generator seeded by ``seed`` and
    takes one optimiser step per batch on ``cross_entropy + regularizer``. The
    global random state (dropout, a regulariser's random directions) is seeded
    with ``seed`` for the run and restored afterwards, so a run is reproducible
    and leaves the caller's random state alone. After each epoch the test set is
    evaluated, then ``callback`` runs with its own copy of the random state, so
    tracking a quantity never changes the training.

    Parameters
    ----------
    model:
        A classifier returning logits ``(B, classes)``; trained in place, then
        left on its original device and in evaluation mode.
    data:
        A :class:`crbook.data.Dataset` (or any object with ``x_train``,
        ``y_train``, ``x_test``, ``y_test``; ``config()`` is used when present).
    epochs:
        Number of passes over the training set.
    batch_size:
        Training batch size (the last batch of an epoch may be smaller).
    optimizer:
        ``(name, hyperparameters)`` with name ``"adam"``, ``"adamw"``, ``"sgd"``,
        ``"rmsprop"`` or ``"adagrad"``; or a callable ``params -> optimizer``
        with a ``name`` attribute (and a ``cache_key``, else its repr keys the
        cache). If the optimiser has ``requires_closure = True``, or its ``step``
        has a required ``closure`` argument, ``step(closure)`` is called after
        the batch's gradients are computed; the closure zeroes the gradients,
        recomputes the loss and its gradients, and returns the loss.
    seed:
        Seed of the shuffling and of the global random state during the run.
    regularizer:
        ``regularizer(model, x, y) -> scalar tensor`` added to the loss of each
        batch. Its ``cache_key`` (or repr) enters the cache key. A regulariser
        whose ``one_pass`` attribute is ``True`` (a :class:`crbook.CRR` built
        with ``one_pass=True``) computes the loss as well: ``fit`` then calls
        ``regularizer.objective(model, x, y)`` for ``(logits, loss, penalty)``
        instead of a forward pass and ``regularizer(model, x, y)``.
    callback:
        ``callback(epoch, model, data) -> dict`` called after epochs ``1 ...
        epochs`` with the model in evaluation mode; each value (number, string
        or tensor) is appended to ``history.metrics[key]``. The same keys must
        come back every epoch.
    device:
        Where to train; default CUDA when available, else the CPU.
    progress:
        Show a progress bar over the epochs.
    cache:
        A folder for finished runs, or ``None`` for no caching. Default:
        :func:`default_cache` (``$CRBOOK_CACHE``, else ``~/.cache/crbook/runs``).

    Returns
    -------
    History

    Raises
    ------
    FloatingPointError
        When the loss becomes NaN or infinite; nothing is cached.

    See chapter 4, λ of a network.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    _check_data(data)
    _check_int("epochs", epochs, 1)
    _check_int("batch_size", batch_size, 1)
    _check_int("seed", seed, 0)
    for name, hook in (("regularizer", regularizer), ("callback", callback)):
        if hook is not None and not callable(hook):
            raise TypeError(f"{name} must be callable or None, got {hook!r}")
    folder = _cache_dir(cache)
    target = _choose_device(device)

    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model has no trainable parameters")
    home = params[0].device
    opt, opt_config = _make_optimizer(optimizer, params)
    config = _configuration(
        model, data, epochs, batch_size, opt_config, seed, regularizer, callback
    )
    key = cache_key(config)
    path = None if folder is None else folder / f"fit-{key}.pt"

    if path is not None and path.is_file():
        loaded = _load(path, key)
        if loaded is not None:
            state, record = loaded
            model.load_state_dict(state)
            model.eval()
            record.pop("config_json")
            return History(
                **record, model=model, state=state, config=config, cached=True
            )

    history = History(
        model=model,
        config=config,
        key=key,
        optimizer=opt_config["name"],
        device=str(target),
    )
    cuda = [target.index or 0] if target.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(seed)
        model.to(target)
        try:
            _train(
                model,
                data,
                opt,
                history,
                epochs,
                batch_size,
                seed,
                regularizer,
                callback,
                target,
                progress,
            )
        finally:
            model.to(home)
    history.state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    if path is not None:
        _store(path, history)
    return history


def _train(
    model: nn.Module,
    data: Any,
    opt: Any,
    history: History,
    epochs: int,
    batch_size: int,
    seed: int,
    regularizer: Callable | None,
    callback: Callable | None,
    device: torch.device,
    progress: bool,
) -> None:
    from tqdm.auto import tqdm

    x_train, y_train = data.x_train.to(device), data.y_train.to(device)
    x_test, y_test = data.x_test.to(device), data.y_test.to(device)
    count = x_train.shape[0]
    shuffle = torch.Generator().manual_seed(seed)
    closure_step = _needs_closure(opt)
    one_pass = getattr(regularizer, "one_pass", False) is True

    bar = tqdm(range(1, epochs + 1), disable=not progress, unit="epoch", leave=False)
    for epoch in bar:
        start = time.perf_counter()
        model.train()
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        penalty_sum = torch.zeros((), dtype=torch.float64, device=device)
        correct = torch.zeros((), dtype=torch.int64, device=device)
        batches = 0
        for index in torch.randperm(count, generator=shuffle).split(batch_size):
            index = index.to(device)
            xb, yb = x_train[index], y_train[index]

            def objective(xb=xb, yb=yb) -> tuple[Tensor, Tensor, Tensor | None]:
                if one_pass:
                    return regularizer.objective(model, xb, yb)
                logits = model(xb)
                ce = F.cross_entropy(logits, yb)
                if regularizer is None:
                    return logits, ce, None
                penalty = regularizer(model, xb, yb)
                if not isinstance(penalty, Tensor) or penalty.numel() != 1:
                    raise TypeError(
                        "regularizer must return a scalar tensor, got "
                        f"{type(penalty).__name__} {getattr(penalty, 'shape', '')}"
                    )
                return logits, ce, penalty.reshape(())

            def closure(objective=objective) -> Tensor:
                model.zero_grad()
                _, ce, penalty = objective()
                total = ce if penalty is None else ce + penalty
                total.backward()
                return total.detach()

            model.zero_grad()
            logits, ce, penalty = objective()
            total = ce if penalty is None else ce + penalty
            total.backward()
            if closure_step:
                opt.step(closure)
            else:
                opt.step()

            loss_sum += ce.detach().double() * yb.shape[0]
            correct += (logits.detach().argmax(1) == yb).sum()
            if penalty is not None:
                penalty_sum += penalty.detach().double()
            batches += 1

        train_loss = loss_sum.item() / count
        mean_penalty = penalty_sum.item() / batches
        if not (math.isfinite(train_loss) and math.isfinite(mean_penalty)):
            raise FloatingPointError(
                f"training diverged in epoch {epoch}: the loss is {train_loss} and "
                f"the penalty {mean_penalty}; lower the learning rate or the "
                "regulariser's scale"
            )
        test_loss, test_accuracy = _evaluate(model, x_test, y_test)
        seconds = time.perf_counter() - start

        history.train_loss.append(train_loss)
        history.train_accuracy.append(correct.item() / count)
        history.test_loss.append(test_loss)
        history.test_accuracy.append(test_accuracy)
        history.seconds.append(seconds)
        if regularizer is not None:
            history.penalty.append(mean_penalty)
        if callback is not None:
            _run_callback(callback, epoch, model, data, history, device)
        bar.set_postfix(loss=f"{train_loss:.4f}", test_acc=f"{test_accuracy:.3f}")


def _run_callback(
    callback: Callable,
    epoch: int,
    model: nn.Module,
    data: Any,
    history: History,
    device: torch.device,
) -> None:
    cuda = [device.index or 0] if device.type == "cuda" else []
    model.eval()
    with torch.random.fork_rng(devices=cuda):
        values = callback(epoch, model, data)
    if not isinstance(values, Mapping):
        raise TypeError(
            f"callback must return a dict of metrics, got {type(values).__name__}"
        )
    clash = sorted(set(values) & set(_BUILT_IN))
    if clash:
        raise ValueError(f"callback keys {clash} clash with the built-in history")
    if history.metrics and set(values) != set(history.metrics):
        raise ValueError(
            f"callback returned keys {sorted(values)} in epoch {epoch}, but "
            f"{sorted(history.metrics)} before: the keys must be the same every epoch"
        )
    for name, value in values.items():
        history.metrics.setdefault(name, []).append(_plain(name, value))
