"""Repository checks: style, clean notebooks, table of contents, CI and pins."""

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = ROOT / "chapters"
NOTEBOOKS = sorted(CHAPTERS.glob("*.ipynb"))


def ruff(*args: str) -> subprocess.CompletedProcess:
    """Run the ruff of this Python environment from the repository root."""
    return subprocess.run(
        [sys.executable, "-m", "ruff", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )


# -- style -----------------------------------------------------------------------


def test_ruff_check_is_clean():
    result = ruff("check", "--no-cache", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format_is_clean():
    result = ruff("format", "--check", "--no-cache", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_notebook_code_cells_fit_79_columns():
    result = ruff("check", "--no-cache", "--line-length", "79", "chapters")
    assert result.returncode == 0, result.stdout + result.stderr


# -- notebooks -------------------------------------------------------------------


def load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def test_there_are_chapters():
    assert NOTEBOOKS, "chapters/ holds no notebook"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_stored_without_outputs(path):
    dirty = [
        index
        for index, cell in enumerate(load(path)["cells"])
        if cell["cell_type"] == "code"
        and (cell.get("outputs") or cell.get("execution_count") is not None)
    ]
    assert not dirty, f"{path.name}: cells {dirty} have outputs or execution counts"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_cells_have_unique_valid_ids(path):
    """nbformat 4.5 requires an id on every cell (nbformat warns, and will fail)."""
    notebook = load(path)
    assert (notebook["nbformat"], notebook["nbformat_minor"]) >= (4, 5)
    ids = [cell.get("id") for cell in notebook["cells"]]
    bad = [
        i
        for i, v in enumerate(ids)
        if not re.fullmatch(r"[a-zA-Z0-9_-]{1,64}", v or "")
    ]
    assert not bad, f"{path.name}: cells {bad} have no valid id"
    assert len(set(ids)) == len(ids), f"{path.name}: repeated cell ids"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_uses_the_python3_kernel(path):
    assert load(path)["metadata"]["kernelspec"]["name"] == "python3"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_starts_with_the_hidden_colab_cell(path):
    first = load(path)["cells"][0]
    source = "".join(first["source"])
    tags = set(first.get("metadata", {}).get("tags", []))
    assert first["cell_type"] == "code"
    assert '"google.colab" in sys.modules' in source
    assert "pip install" in source
    assert tags & {"remove-cell", "remove-input"}, f"tags are {sorted(tags)}"


# -- table of contents -----------------------------------------------------------


def toc_files(node) -> list[str]:
    """Every ``file`` and ``root`` entry of a parsed _toc.yml, in order."""
    found = []
    if isinstance(node, dict):
        for key in ("root", "file"):
            if key in node:
                found.append(node[key])
        for value in node.values():
            if isinstance(value, dict | list):
                found += toc_files(value)
    elif isinstance(node, list):
        for item in node:
            found += toc_files(item)
    return found


def resolve(entry: str) -> list[Path]:
    path = ROOT / entry
    candidates = [path] if path.suffix else [path.with_suffix(".ipynb")]
    if not path.suffix:
        candidates.append(path.with_suffix(".md"))
    return [c for c in candidates if c.is_file()]


def test_toc_root_is_the_introduction():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text(encoding="utf-8"))
    assert toc["format"] == "jb-book"
    assert toc["root"] == "chapters/intro"


def test_every_toc_entry_exists_once():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text(encoding="utf-8"))
    entries = toc_files(toc)
    missing = [entry for entry in entries if not resolve(entry)]
    assert not missing, f"_toc.yml lists files that do not exist: {missing}"
    twice = sorted({entry for entry in entries if entries.count(entry) > 1})
    assert not twice, f"_toc.yml lists files more than once: {twice}"


def test_every_chapter_notebook_is_in_the_toc():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text(encoding="utf-8"))
    listed = {path for entry in toc_files(toc) for path in resolve(entry)}
    unlisted = [p.name for p in NOTEBOOKS if p not in listed]
    assert not unlisted, f"notebooks missing from _toc.yml: {unlisted}"


def test_book_config_fails_on_errors_and_caches():
    config = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))
    execute = config["execute"]
    assert execute["execute_notebooks"] == "cache"
    assert execute["allow_errors"] is False
    assert execute["raise_on_error"] is True
    assert config["only_build_toc_files"] is True
    assert {"_build", ".venv"} <= set(config["exclude_patterns"])


# -- the README's commands, CI and pins ------------------------------------------


def readme_command(heading: str) -> str:
    """The single line of the fenced block that follows ``### <heading>``."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(
        rf"^### {re.escape(heading)}\s*\n(?:(?!^#).*\n)*?```(?:bash|sh)?\n(.*?)```",
        text,
        flags=re.MULTILINE | re.DOTALL,
    )
    assert match, f"README.md has no fenced block under '### {heading}'"
    lines = [line for line in match.group(1).splitlines() if line.strip()]
    assert len(lines) == 1, f"the '{heading}' block must be one line, got {lines}"
    return lines[0].strip()


def ci_command() -> str:
    """The line of .ci/run that follows its 'README's test command' comment."""
    lines = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    marks = [i for i, line in enumerate(lines) if "README's test command" in line]
    assert len(marks) == 1, "the marker comment must appear once in .ci/run"
    return lines[marks[0] + 1].strip()


def test_ci_runs_the_readme_test_command():
    assert ci_command() == readme_command("Run the tests")


def test_readme_test_command_runs_pytest_in_smoke_profile():
    words = shlex.split(readme_command("Run the tests"))
    assert "OMP_NUM_THREADS=1" in words
    assert "CRBOOK_PROFILE=smoke" in words
    assert words[-3:] == [".venv/bin/python", "-m", "pytest"]
    assert "requirements.txt" in words


def test_readme_build_command_builds_strictly():
    words = shlex.split(readme_command("Build the book"))
    assert "requirements.txt" in words
    build = words.index("build")
    assert words[build - 1].endswith("jupyter-book")
    assert "-W" in words and "_build/html/index.html" in " ".join(words)


def test_ci_script_is_strict_and_starts_from_a_new_venv():
    script = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert script.startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in script
    assert "rm -rf .venv" in script
    assert re.search(r'exit "\$status"\s*$', script), "the exit status must be kept"


def requirements() -> dict[str, str]:
    pins = {}
    for raw in (ROOT / "requirements.txt").read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line or line in {"-e .", "."}:
            continue
        name, sep, version = line.partition("==")
        assert sep and version, f"requirements.txt: '{line}' is not an == pin"
        pins[name.strip().lower()] = version.strip()
    return pins


def test_requirements_pin_cpu_torch_and_jupyter_book_1():
    pins = requirements()
    assert pins["torch"] == "2.13.0"
    assert int(pins["jupyter-book"].split(".")[0]) < 2


def test_requirements_end_with_the_package_itself():
    lines = [
        line.strip()
        for line in (ROOT / "requirements.txt").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert lines[-1] in {"-e .", "."}


def test_readme_usage_examples_run(monkeypatch, tmp_path):
    """The Python blocks of "Three ways to use it" run on a small classifier."""
    import torch

    import crbook

    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Three ways to use it", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) >= 2
    monkeypatch.setenv("CRBOOK_CACHE", str(tmp_path))
    torch.manual_seed(0)
    data = crbook.data.two_moons(n=96, seed=0)
    namespace = {
        "model": crbook.models.MLP((2, 16, 2)),
        "data": data,
        "x": data.x_train[:32],
        "y": data.y_train[:32],
    }
    for block in blocks:
        exec(compile(block, "README.md", "exec"), namespace)
    assert isinstance(namespace["rate"].lam, float)
    assert namespace["history"].penalty and min(namespace["history"].penalty) > 0
    assert namespace["penalty"].item() > 0
    assert isinstance(namespace["sam"], crbook.SAM)
