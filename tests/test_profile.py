"""Tests for crbook._profile: reading CRBOOK_PROFILE and choosing sizes."""

import re
from pathlib import Path

import pytest

import crbook
from crbook._profile import PROFILES, choose, profile


@pytest.fixture
def no_profile(monkeypatch):
    monkeypatch.delenv("CRBOOK_PROFILE", raising=False)
    return monkeypatch


def test_default_is_book_when_unset(no_profile):
    assert profile() == "book"


@pytest.mark.parametrize("empty", ["", "   "])
def test_default_is_book_when_empty(monkeypatch, empty):
    monkeypatch.setenv("CRBOOK_PROFILE", empty)
    assert profile() == "book"


@pytest.mark.parametrize("name", ["smoke", "book", "paper"])
def test_each_valid_profile_is_returned(monkeypatch, name):
    monkeypatch.setenv("CRBOOK_PROFILE", name)
    assert profile() == name


def test_case_and_whitespace_are_ignored(monkeypatch):
    monkeypatch.setenv("CRBOOK_PROFILE", " Paper\n")
    assert profile() == "paper"


@pytest.mark.parametrize("bad", ["fast", "smoke-test", "gpu", "0"])
def test_unknown_profile_raises_and_names_the_valid_ones(monkeypatch, bad):
    monkeypatch.setenv("CRBOOK_PROFILE", bad)
    with pytest.raises(ValueError) as info:
        profile()
    message = str(info.value)
    assert repr(bad) in message
    for name in ("smoke", "book", "paper"):
        assert name in message


def test_profile_is_read_at_each_call(monkeypatch):
    monkeypatch.setenv("CRBOOK_PROFILE", "smoke")
    assert profile() == "smoke"
    monkeypatch.setenv("CRBOOK_PROFILE", "paper")
    assert profile() == "paper"


@pytest.mark.parametrize("name", ["smoke", "book", "paper"])
def test_choose_returns_the_active_profiles_argument(monkeypatch, name):
    monkeypatch.setenv("CRBOOK_PROFILE", name)
    sizes = {"smoke": object(), "book": object(), "paper": object()}
    assert choose(**sizes) is sizes[name]


def test_choose_uses_book_by_default(no_profile):
    assert choose(smoke=1, book=2, paper=3) == 2


def test_choose_requires_all_three_keywords(no_profile):
    with pytest.raises(TypeError):
        choose(smoke=1, book=2)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        choose(1, 2, 3)  # type: ignore[misc]


def test_choose_propagates_a_bad_profile(monkeypatch):
    monkeypatch.setenv("CRBOOK_PROFILE", "huge")
    with pytest.raises(ValueError, match="CRBOOK_PROFILE"):
        choose(smoke=1, book=2, paper=3)


def test_public_names_and_profile_list():
    assert crbook.profile is profile
    assert crbook.choose is choose
    assert PROFILES == ("smoke", "book", "paper")


def test_profile_is_the_only_reader_of_the_variable():
    """No other module of the package reads CRBOOK_PROFILE itself."""
    package = Path(crbook.__file__).parent
    reads = re.compile(r"(environ|getenv)\W[^\n]*CRBOOK_PROFILE")
    readers = sorted(
        path.name
        for path in package.rglob("*.py")
        if reads.search(path.read_text(encoding="utf-8"))
    )
    assert readers == ["_profile.py"]
