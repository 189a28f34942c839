"""Run profiles: how big the book's experiments are allowed to be.

Every chapter runs the same cells whatever the profile; only the sizes change
(number of seeds, epochs, data points, orders). The active profile is read from
the environment variable ``CRBOOK_PROFILE``, and this module is the only place
in the package that reads it.

``"smoke"``
    Continuous integration. Every cell runs, with sizes shrunk so that a
    chapter executes in seconds. Numbers printed under this profile only show
    that the code runs; they are not results.
``"book"`` (the default, used when the variable is unset or empty)
    The rendered book. Sizes are chosen so that the whole book builds on a
    2-core CPU in reasonable time, while the figures still show the effect a
    chapter teaches.
``"paper"``
    The paper's full settings (seeds, epochs, data set sizes), meant for a GPU.

A chapter picks its sizes with :func:`choose`, for example
``epochs = choose(smoke=1, book=10, paper=30)``. See the introduction,
"How to run it".
"""

from __future__ import annotations

import os
from typing import TypeVar

__all__ = ["PROFILES", "choose", "profile"]

PROFILES: tuple[str, ...] = ("smoke", "book", "paper")
"""The valid values of ``CRBOOK_PROFILE``, from the smallest to the largest."""

_DEFAULT = "book"

T = TypeVar("T")


def profile() -> str:
    """Return the active run profile.

    Reads ``CRBOOK_PROFILE`` each time it is called, so a change of the
    variable takes effect at once. Surrounding whitespace and letter case are
    ignored.

    Returns
    -------
    str
        ``"smoke"``, ``"book"`` or ``"paper"``; ``"book"`` when the variable is
        unset or empty.

    Raises
    ------
    ValueError
        If the variable holds any other value.

    See the introduction, "How to run it".
    """
    raw = os.environ.get("CRBOOK_PROFILE", "")
    value = raw.strip().lower()
    if not value:
        return _DEFAULT
    if value not in PROFILES:
        valid = ", ".join(repr(p) for p in PROFILES)
        raise ValueError(
            f"CRBOOK_PROFILE must be one of {valid} (or unset for 'book'), got {raw!r}"
        )
    return value


def choose(*, smoke: T, book: T, paper: T) -> T:
    """Return the value given for the active profile.

    Parameters
    ----------
    smoke, book, paper
        The value to use under each profile; all three are required, so a
        chapter always says what it does under every profile.

    Returns
    -------
    object
        ``smoke``, ``book`` or ``paper``, whichever :func:`profile` names.

    Examples
    --------
    >>> n_seeds = choose(smoke=1, book=5, paper=40)

    See the introduction, "How to run it".
    """
    return {"smoke": smoke, "book": book, "paper": paper}[profile()]
