"""The book as readers meet it: Colab links, the API page, the Sphinx extension,
and the built HTML opened in headless Chromium.

The cheap tests read the sources only. The last group builds the book at the
smoke profile into ``_build/smoke`` (the README's build command, with another
output folder) and opens every page in Chromium with the network cut off: the
maths must be typeset, every image must load, widgets must render and the Colab
links must point at the page's own notebook. A screenshot of every page is kept
in ``_build/screenshots``. Without Chromium these browser tests are skipped,
except in CI (``CI`` set), where they fail: ``.ci/run`` installs it.
"""

import base64
import fcntl
import importlib
import json
import os
import re
import select
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import types
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from docutils import nodes
from docutils.utils import new_document
from sphinx.builders.html._assets import _JavaScript

import crbook
from crbook import _sphinx

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = ROOT / "chapters"
NOTEBOOKS = sorted(CHAPTERS.glob("*.ipynb"))
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))
TOC = yaml.safe_load((ROOT / "_toc.yml").read_text(encoding="utf-8"))
BADGE_LINK = re.compile(
    r"\[!\[Open in Colab\]\((?P<image>[^)\s]+)\)\]\((?P<link>[^)\s]+)\)"
)


def load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def colab_url(relative: str) -> str:
    """Colab's address for the notebook at ``relative`` in the book's repository."""
    repository = CONFIG["repository"]["url"].rstrip("/")
    assert repository.startswith("https://github.com/"), repository
    slug = repository.removeprefix("https://github.com/")
    branch = CONFIG["repository"].get("branch", "main")
    prefix = (CONFIG["repository"].get("path_to_book") or "").strip("/")
    path = f"{prefix}/{relative}" if prefix else relative
    return f"https://colab.research.google.com/github/{slug}/blob/{branch}/{path}"


def toc_entries() -> list[str]:
    entries = [TOC["root"]]
    for part in TOC.get("parts", []):
        entries += [chapter["file"] for chapter in part["chapters"]]
    return entries


# -- Colab: badge and set-up cell ------------------------------------------------


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_chapter_badge_opens_its_own_notebook_in_colab(path):
    cells = load(path)["cells"]
    first_markdown = next(c for c in cells if c["cell_type"] == "markdown")
    text = "".join(first_markdown["source"])
    badges = list(BADGE_LINK.finditer(text))
    assert len(badges) == 1, f"{path.name}: one Colab badge in the first text cell"
    expected = colab_url(path.relative_to(ROOT).as_posix())
    assert badges[0]["link"] == expected
    # The book's HTML replaces exactly this image by a local copy.
    assert badges[0]["image"] == _sphinx.COLAB_BADGE_URL
    elsewhere = [
        i
        for i, cell in enumerate(cells)
        if cell is not first_markdown
        and "colab.research.google.com/github" in "".join(cell["source"])
    ]
    assert not elsewhere, f"{path.name}: other Colab links in cells {elsewhere}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_setup_cell_comes_first_and_installs_only_on_colab(path):
    cells = load(path)["cells"]
    first = cells[0]
    assert first["cell_type"] == "code"
    lines = "".join(first["source"]).splitlines()
    guards = [i for i, line in enumerate(lines) if "google.colab" in line]
    assert len(guards) == 1, lines
    guard = lines[guards[0]]
    assert re.fullmatch(r'if "google\.colab" in sys\.modules:\s*', guard), guard
    indent = len(guard) - len(guard.lstrip())
    installs = [i for i, line in enumerate(lines) if "pip install" in line]
    assert installs, f"{path.name}: the set-up cell installs nothing"
    for i in installs:
        body = lines[i]
        assert i > guards[0] and len(body) - len(body.lstrip()) > indent, body
        # The package comes from the repository the Colab links point at.
        assert f"git+{CONFIG['repository']['url']}" in body, body
    assert "import sys" in lines[: guards[0]]
    later = [
        i for i, c in enumerate(cells[1:], 1) if "pip install" in "".join(c["source"])
    ]
    assert not later, f"{path.name}: cells {later} also install packages"


# -- configuration and table of contents ---------------------------------------


def test_config_loads_the_extension_and_launches_colab():
    sphinx = CONFIG["sphinx"]
    assert {"sphinx.ext.autodoc", "sphinx.ext.napoleon", "crbook._sphinx"} <= set(
        sphinx["extra_extensions"]
    )
    config = sphinx["config"]
    # Offline: no inventories to fetch, and no CDN address that would
    # override the local MathJax and widget scripts the extension sets.
    assert config.get("intersphinx_mapping", {}) == {}
    assert "mathjax_path" not in config and "nb_ipywidgets_js" not in config
    assert CONFIG["launch_buttons"]["colab_url"] == "https://colab.research.google.com"
    assert CONFIG["execute"]["timeout"] >= 1800


def test_toc_numbers_the_foundations_part_and_ends_with_the_reference():
    parts = TOC["parts"]
    captions = [part["caption"] for part in parts]
    assert captions[0] == "Foundations" and captions[-1] == "Reference"
    known = ["Foundations", "Networks", "Shaping curvature", "Reference"]
    assert captions == [c for c in known if c in captions], captions
    for part in parts[:-1]:
        assert part.get("numbered") is True, part["caption"]
    assert not parts[-1].get("numbered")
    foundations = [c["file"] for c in parts[0]["chapters"]]
    expected = ["chapters/dynamics", "chapters/radius", "chapters/spectral"]
    present = [e for e in expected if (ROOT / f"{e}.ipynb").is_file()]
    assert foundations[: len(present)] == present
    reference = [c["file"] for c in parts[-1]["chapters"]]
    assert reference == ["chapters/api", "chapters/bibliography"]


# -- the API page and the bibliography ------------------------------------------

API = (CHAPTERS / "api.md").read_text(encoding="utf-8")


def documented(kind: str) -> set[str]:
    return set(re.findall(rf"^\.\. {kind}:: (\S+)", API, flags=re.MULTILINE))


def test_api_page_lists_each_object_once():
    directives = re.findall(r"^\.\. ([\w-]+:: \S+)", API, flags=re.MULTILINE)
    twice = sorted({d for d in directives if directives.count(d) > 1})
    assert not twice, f"chapters/api.md repeats {twice}"


def test_api_page_documents_every_public_name():
    objects = (
        documented("autofunction")
        | documented("autoclass")
        | documented("autoexception")
    )
    names = [
        n
        for n in crbook.__all__
        if not isinstance(getattr(crbook, n), types.ModuleType)
    ]
    missing = [n for n in names if f"crbook.{n}" not in objects]
    assert not missing, f"chapters/api.md lacks {missing}"
    unknown = [o for o in objects if o.removeprefix("crbook.") not in names]
    assert not unknown, f"chapters/api.md documents non-public {unknown}"


def test_api_page_documents_every_public_submodule():
    modules = {
        f"crbook.{p.stem}"
        for p in (ROOT / "crbook").glob("*.py")
        if not p.stem.startswith("_")
    }
    assert modules - documented("automodule") == set()


def test_api_page_shows_the_limitations_behind_every_public_name():
    behind = {
        getattr(crbook, name).__module__
        for name in crbook.__all__
        if not isinstance(getattr(crbook, name), types.ModuleType)
    }
    with_limits = set()
    for module in behind:
        try:
            _sphinx.limitations(module)
        except ValueError:
            continue
        with_limits.add(module)
    assert with_limits <= documented("crbook-limitations")


def bib_keys() -> set[str]:
    text = (ROOT / "references.bib").read_text(encoding="utf-8")
    return set(re.findall(r"^@\w+\{([^,\s]+),", text, flags=re.MULTILINE))


def test_bibliography_holds_the_books_sources():
    from pybtex.database import parse_file

    entries = parse_file(str(ROOT / "references.bib")).entries
    assert set(entries) == bib_keys()
    for key, entry in entries.items():
        assert entry.persons.get("author"), key
        assert entry.fields.get("title") and entry.fields.get("year"), key
    paper = entries["poschl2025curvature"]
    assert paper.fields["eprint"] == "2511.01438"


def test_every_citation_has_an_entry():
    cited = set()
    for path in [*NOTEBOOKS, *CHAPTERS.glob("*.md")]:
        for match in re.finditer(
            r"\{cite(?::\w+)?\}`([^`]+)`", path.read_text("utf-8")
        ):
            cited |= {key.strip() for key in match[1].split(",")}
    assert cited - bib_keys() == set()


def test_the_bibliography_page_lists_every_entry():
    text = (CHAPTERS / "bibliography.md").read_text(encoding="utf-8")
    assert re.search(r"```\{bibliography\}\s*\n:all:", text)


# -- the extension: execution cache per profile ---------------------------------


def test_execution_cache_has_one_folder_per_profile(tmp_path):
    outdir = tmp_path / "_build" / "html"
    smoke = _sphinx.execution_cache_path("", outdir, "smoke")
    book = _sphinx.execution_cache_path("", outdir, "book")
    assert Path(smoke) == tmp_path / "_build" / ".jupyter_cache" / "smoke"
    assert Path(book) == tmp_path / "_build" / ".jupyter_cache" / "book"
    chosen = _sphinx.execution_cache_path(str(tmp_path / "cache"), outdir, "paper")
    assert Path(chosen) == tmp_path / "cache" / "paper"


@pytest.mark.parametrize("name", ["smoke", "book", "paper"])
def test_configure_reads_the_active_profile(monkeypatch, tmp_path, name):
    monkeypatch.setenv("CRBOOK_PROFILE", name)
    app = SimpleNamespace(outdir=tmp_path / "_build" / "html")
    config = SimpleNamespace(nb_execution_cache_path="")
    _sphinx._configure(app, config)
    assert Path(config.nb_execution_cache_path).parts[-2:] == (".jupyter_cache", name)
    assert not config.mathjax_path.startswith(("http:", "https:", "//"))
    assert all("://" not in path for path in config.nb_ipywidgets_js)


def _tiny_book(folder: Path, source: str) -> Path:
    """A one-page book in ``folder`` whose notebook runs the code ``source``."""
    folder.mkdir(exist_ok=True)
    (folder / "conf.py").write_text(
        'extensions = ["myst_nb", "crbook._sphinx"]\n'
        'nb_execution_mode = "cache"\n'
        "nb_execution_raise_on_error = True\n"
        'exclude_patterns = ["_build"]\n',
        encoding="utf-8",
    )
    notebook = {
        "cells": [
            {"cell_type": "markdown", "metadata": {}, "source": "# Page"},
            {
                "cell_type": "code",
                "execution_count": None,
                "metadata": {},
                "outputs": [],
                "source": source,
            },
        ],
        "metadata": {
            "kernelspec": {"name": "python3", "display_name": "Python 3"},
            "language_info": {"name": "python"},
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    (folder / "page.ipynb").write_text(json.dumps(notebook), encoding="utf-8")
    (folder / "index.md").write_text("# Tiny\n\n```{toctree}\npage\n```\n")
    return folder


def _sphinx_text_build(
    source: Path, profile: str = "smoke", cell_timeout: int | None = None
) -> tuple[int, str]:
    """Build ``source`` as text; return the exit status and the log."""
    env = {**os.environ, "CRBOOK_PROFILE": profile, "OMP_NUM_THREADS": "1"}
    if cell_timeout is not None:
        env["CRBOOK_CELL_TIMEOUT"] = str(cell_timeout)
    command = [sys.executable, "-m", "sphinx", "-q", "-b", "text"]
    result = subprocess.run(
        [*command, str(source), str(source / "_build" / "text")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    return result.returncode, result.stdout + result.stderr


def build_tiny_book(source: Path, name: str) -> str:
    """Build ``source`` as text at profile ``name``; return the notebook's page."""
    returncode, log = _sphinx_text_build(source, name)
    assert returncode == 0, log
    return (source / "_build" / "text" / "page.txt").read_text(encoding="utf-8")


def test_a_build_at_another_profile_does_not_show_stale_outputs(tmp_path):
    # A one-cell notebook that prints the profile its kernel ran under, built
    # into the same folder at two profiles: jupyter-cache alone would hand the
    # second build the first build's output.
    _tiny_book(tmp_path, "import os\nprint('ran under', os.environ['CRBOOK_PROFILE'])")
    assert "ran under smoke" in build_tiny_book(tmp_path, "smoke")
    assert "ran under book" in build_tiny_book(tmp_path, "book")
    cache = tmp_path / "_build" / ".jupyter_cache"
    assert sorted(p.name for p in cache.iterdir()) == ["book", "smoke"]


STUCK_ONCE = (
    "import pathlib, time\n"
    "marker = pathlib.Path('ran-once')\n"
    "if not marker.exists():\n"
    "    marker.touch()\n"
    "    time.sleep(120)  # stands for a kernel that stopped answering\n"
    "print('finished')"
)


def test_a_cell_past_the_timeout_fails_the_build_and_one_retry_recovers(tmp_path):
    plain = _tiny_book(tmp_path / "plain", STUCK_ONCE)
    returncode, log = _sphinx_text_build(plain, cell_timeout=3)
    assert returncode != 0 and "CellTimeoutError" in log, log[-2000:]

    retried = _tiny_book(tmp_path / "retried", STUCK_ONCE)
    returncode, log = build_retrying_a_stuck_kernel(
        lambda: _sphinx_text_build(retried, cell_timeout=3)
    )
    assert returncode == 0, log[-2000:]
    page = (retried / "_build" / "text" / "page.txt").read_text(encoding="utf-8")
    assert "finished" in page


@pytest.mark.parametrize("value", ["0", "-5", "ten", "1.5", " "])
def test_cell_timeout_must_be_a_positive_number_of_seconds(value):
    with pytest.raises(ValueError, match="CRBOOK_CELL_TIMEOUT must be a positive"):
        _sphinx.cell_timeout(value)
    assert _sphinx.cell_timeout(" 300\n") == 300


def test_configure_rejects_an_unknown_profile(monkeypatch, tmp_path):
    monkeypatch.setenv("CRBOOK_PROFILE", "fast")
    app = SimpleNamespace(outdir=tmp_path)
    with pytest.raises(ValueError, match="CRBOOK_PROFILE"):
        _sphinx._configure(app, SimpleNamespace(nb_execution_cache_path=""))


# -- the extension: vendored JavaScript -----------------------------------------


def sha512_integrity(data: bytes) -> str:
    import hashlib

    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()


def fake_package(tmp_path: Path) -> tuple[_sphinx.VendorPackage, Path]:
    """A small npm-style tarball in a cache folder, and its pinned description."""
    source = tmp_path / "src"
    files = {
        "package/dist/embed.js": b"console.log('embed');\n",
        "package/dist/embed.js.map": b"{}",
        "package/dist/font.woff2": b"\0font",
        "package/README.md": b"not kept",
        "package/../outside.js": b"never unpacked",
    }
    tarball = tmp_path / "cache" / "thing-1.2.3.tgz"
    tarball.parent.mkdir(parents=True)
    with tarfile.open(tarball, "w:gz") as archive:
        for name, data in files.items():
            path = source / name.replace("../", "up/")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            archive.add(path, arcname=name)
    package = _sphinx.VendorPackage(
        name="@scope/thing",
        version="1.2.3",
        integrity=sha512_integrity(tarball.read_bytes()),
        keep=("dist",),
        entry="dist/embed.js",
    )
    return package, tarball


def test_fetch_unpacks_only_the_kept_files_of_a_cached_tarball(tmp_path):
    package, tarball = fake_package(tmp_path)
    assert package.tarball == tarball.name
    assert package.url() == "https://registry.npmjs.org/@scope/thing/-/thing-1.2.3.tgz"
    folder = _sphinx.fetch(package, tarball.parent, "http://127.0.0.1:9")
    unpacked = sorted(
        p.relative_to(folder).as_posix()
        for p in folder.rglob("*")
        if p.is_file() and p.name != ".complete"
    )
    assert unpacked == ["dist/embed.js", "dist/font.woff2"]
    assert (folder / "dist" / "embed.js").read_bytes() == b"console.log('embed');\n"
    assert not (tmp_path / "outside.js").exists()
    tarball.unlink()  # a second call needs nothing but the unpacked folder
    assert _sphinx.fetch(package, tarball.parent, "http://127.0.0.1:9") == folder


def test_fetch_rejects_a_tarball_that_does_not_match_its_integrity(tmp_path):
    package, tarball = fake_package(tmp_path)
    tarball.write_bytes(tarball.read_bytes() + b"tampered")
    with pytest.raises(
        _sphinx.VendorError, match="does not match the pinned integrity"
    ):
        _sphinx.fetch(package, tarball.parent, "http://127.0.0.1:9")


def test_fetch_without_registry_or_cache_says_what_to_download(tmp_path):
    package, tarball = fake_package(tmp_path)
    tarball.unlink()
    registry = "http://127.0.0.1:9"  # the discard port: connection refused
    with pytest.raises(_sphinx.VendorError) as error:
        _sphinx.fetch(package, tarball.parent, registry)
    message = str(error.value)
    assert package.url(registry) in message
    assert str(tarball) in message
    assert not tarball.exists()


def test_vendored_versions_match_the_installed_libraries():
    from ipywidgets import _version as widgets_version
    from sphinx.ext import mathjax

    wanted = widgets_version.__html_manager_version__  # e.g. "^1.0.1"
    assert wanted.startswith("^"), wanted
    low = tuple(int(p) for p in wanted[1:].split("."))
    have = tuple(int(p) for p in _sphinx.WIDGETS.version.split("."))
    assert have[0] == low[0] and have >= low, (wanted, _sphinx.WIDGETS.version)
    major = _sphinx.MATHJAX.version.split(".")[0]
    assert f"mathjax@{major}/" in mathjax.MATHJAX_URL


# -- the extension: pages ---------------------------------------------------------


def test_colab_badge_is_replaced_by_a_local_image():
    document = new_document("test")
    remote = nodes.image(uri=_sphinx.COLAB_BADGE_URL)
    other = nodes.image(uri="https://example.org/figure.png")
    document += nodes.reference("", "", remote, refuri="https://colab.example")
    document += other
    _sphinx._local_badge(None, document, "chapters/intro")
    prefix = "data:image/svg+xml;base64,"
    assert remote["uri"].startswith(prefix)
    svg = base64.b64decode(remote["uri"].removeprefix(prefix)).decode()
    assert svg.startswith("<svg") and "Open in Colab" in svg
    assert other["uri"] == "https://example.org/figure.png"


def test_page_scripts_are_deduplicated_and_thebe_is_dropped_when_off():
    thebe_config = _JavaScript("", body='const THEBE_JS_URL = "https://x"')
    scripts = [
        _JavaScript("doctools.js"),
        thebe_config,
        _JavaScript("sphinx-thebe.js", **{"async": "async"}),
        _JavaScript("", body="var a = 1;"),
        _JavaScript("", body="var a = 1;", priority=200),
        _JavaScript("doctools.js"),
    ]
    off = SimpleNamespace(
        config=SimpleNamespace(html_theme_options={"launch_buttons": {"thebe": False}})
    )
    context = {"script_files": list(scripts)}
    _sphinx._tidy_scripts(off, "intro", "page.html", context, None)
    assert context["script_files"] == [scripts[0], scripts[3]]
    on = SimpleNamespace(
        config=SimpleNamespace(html_theme_options={"launch_buttons": {"thebe": True}})
    )
    context = {"script_files": list(scripts)}
    _sphinx._tidy_scripts(on, "intro", "page.html", context, None)
    assert context["script_files"] == scripts[:4]


@pytest.mark.parametrize(
    ("flags", "warnings", "exception", "kept"),
    [
        # -W --keep-going (Sphinx turns it into keep_going=True,
        # warningiserror=False) with warnings: read everything next time.
        ((False, True), 2, None, False),
        ((True, False), 1, None, False),  # -W alone
        ((False, True), 0, None, True),  # a clean build keeps its environment
        ((False, False), 3, None, True),  # without -W warnings fail nothing
        ((False, True), 1, RuntimeError("boom"), True),  # Sphinx's own case
    ],
)
def test_environment_is_dropped_after_a_build_with_warnings(
    tmp_path, flags, warnings, exception, kept
):
    environment = tmp_path / "environment.pickle"
    environment.write_bytes(b"saved")
    app = SimpleNamespace(
        doctreedir=tmp_path,
        warningiserror=flags[0],
        keep_going=flags[1],
        _warncount=warnings,
    )
    _sphinx._forget_env_after_warnings(app, exception)
    assert environment.exists() == kept


def test_limitations_reads_one_section_of_a_module_docstring(tmp_path, monkeypatch):
    (tmp_path / "limited_module_for_test.py").write_text(
        '"""Title line.\n\nLimitations\n-----------\nFirst line.\n\n'
        'Second paragraph.\n\nExamples\n--------\n>>> 1\n"""\n',
        encoding="utf-8",
    )
    (tmp_path / "unlimited_module_for_test.py").write_text('"""No section."""\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    body = _sphinx.limitations("limited_module_for_test")
    assert body == "First line.\n\nSecond paragraph."
    with pytest.raises(ValueError, match="no 'Limitations' section"):
        _sphinx.limitations("unlimited_module_for_test")


# -- the built book in a browser --------------------------------------------------

SMOKE_OUTPUT = ROOT / "_build" / "smoke"
HTML = SMOKE_OUTPUT / "_build" / "html"
SCREENSHOTS = ROOT / "_build" / "screenshots"
PAGES = toc_entries()


# Seconds per cell in the smoke build: its cells take seconds, so a cell still
# running after this long is a kernel that stopped answering.
SMOKE_CELL_TIMEOUT = 300


def build_retrying_a_stuck_kernel(build) -> tuple[int, str]:
    """``build()`` -> (returncode, log), run once more if a cell timed out."""
    returncode, log = build()
    if returncode != 0 and "CellTimeoutError" in log:
        returncode, log = build()
    return returncode, log


def _build_smoke_book() -> tuple[int, str]:
    command = [
        str(Path(sys.executable).with_name("jupyter-book")),
        "build",
        "-W",
        "--keep-going",
        "--path-output",
        str(SMOKE_OUTPUT.relative_to(ROOT)),
        ".",
    ]
    env = {
        **os.environ,
        "CRBOOK_PROFILE": "smoke",
        "OMP_NUM_THREADS": "1",
        "CRBOOK_CELL_TIMEOUT": str(SMOKE_CELL_TIMEOUT),
    }
    result = subprocess.run(
        command,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    return result.returncode, result.stdout + result.stderr


@pytest.fixture(scope="module")
def built_book() -> Path:
    """Build the book at the smoke profile, strictly, into ``_build/smoke``.

    A notebook's kernel now and then stops answering in the middle of a headless
    run (seen in fresh CI environments with ipykernel 6.31 and 7.4 alike: the
    kernel idle, nbclient waiting for a message that never comes). Such a cell
    times out after ``SMOKE_CELL_TIMEOUT`` seconds, and the build is run once
    more: the execution cache keeps every notebook that finished, so only the
    stuck one runs again. Any other failure, or a second timeout, fails.
    """
    returncode, log = build_retrying_a_stuck_kernel(_build_smoke_book)
    problems = [
        line
        for line in log.splitlines()
        if re.search(r"WARNING|ERROR|CRITICAL", line) and "IPKernelApp" not in line
    ]
    assert returncode == 0, "\n".join(problems) or log[-4000:]
    return HTML


def test_book_builds_strictly_with_a_cache_per_profile(built_book):
    for entry in PAGES:
        assert (built_book / f"{entry}.html").is_file(), entry
    cache = SMOKE_OUTPUT / "_build" / ".jupyter_cache"
    assert (cache / "smoke" / "global.db").is_file()
    assert not (cache / "global.db").exists()
    vendor = built_book / "_static" / _sphinx.STATIC_FOLDER
    assert (vendor / _sphinx.MATHJAX.folder / _sphinx.MATHJAX.entry).is_file()
    assert (vendor / _sphinx.WIDGETS.folder / _sphinx.WIDGETS.entry).is_file()


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        if found := shutil.which(name):
            return found
    return None


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


class Chromium:
    """Headless Chromium driven through the DevTools protocol over a pipe.

    ``--remote-debugging-pipe`` makes Chromium read commands from file
    descriptor 3 and write replies and events to 4, as NUL-terminated JSON, so
    no port is opened and no client library is needed.
    """

    FLAGS = (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-extensions",
        "--mute-audio",
        "--hide-scrollbars",
        # The network is off: no name resolves.
        "--host-resolver-rules=MAP * ~NOTFOUND",
        "--remote-debugging-pipe",
    )

    def __init__(self, executable: str):
        self.profile = tempfile.mkdtemp(prefix="crbook-chromium-")
        to_browser, self._write = os.pipe()
        self._read, from_browser = os.pipe()
        # Out of the way of 3 and 4 before they are set in the child.
        high_in = fcntl.fcntl(to_browser, fcntl.F_DUPFD_CLOEXEC, 10)
        high_out = fcntl.fcntl(from_browser, fcntl.F_DUPFD_CLOEXEC, 10)
        os.close(to_browser)
        os.close(from_browser)

        def wire_pipes():  # runs in the child, before exec
            os.dup2(high_in, 3)
            os.dup2(high_out, 4)

        self.log = Path(self.profile) / "chromium.log"
        with self.log.open("w") as log:
            self.process = subprocess.Popen(
                [executable, *self.FLAGS, f"--user-data-dir={self.profile}"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                close_fds=False,
                preexec_fn=wire_pipes,
            )
        os.close(high_in)
        os.close(high_out)
        self._buffer = b""
        self._id = 0
        self.events: list[dict] = []

    def _receive(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("Chromium did not answer in time")
            ready, _, _ = select.select([self._read], [], [], left)
            if ready:
                chunk = os.read(self._read, 1 << 20)
                if not chunk:
                    raise RuntimeError(f"Chromium exited: {self.log.read_text()}")
                self._buffer += chunk
        message, _, self._buffer = self._buffer.partition(b"\0")
        return json.loads(message)

    def send(self, method: str, params=None, session=None, timeout=60.0) -> dict:
        self._id += 1
        message = {"id": self._id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._write, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._receive(deadline)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]
            self.events.append(reply)

    def wait_for(self, method: str, session: str, timeout=60.0) -> dict:
        deadline = time.monotonic() + timeout
        for event in self.events:
            if event.get("method") == method and event.get("sessionId") == session:
                return event
        while True:
            event = self._receive(deadline)
            self.events.append(event)
            if event.get("method") == method and event.get("sessionId") == session:
                return event

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=10)
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self._read)
        os.close(self._write)
        shutil.rmtree(self.profile, ignore_errors=True)


@pytest.fixture(scope="module")
def browser(built_book):
    executable = find_chromium()
    if executable is None:
        message = (
            "headless Chromium is not installed (Debian: apt-get install -y "
            "--no-install-recommends chromium)"
        )
        if in_ci():
            pytest.fail(f"{message}; CI must run the browser checks")
        pytest.skip(message)
    chromium = Chromium(executable)
    yield chromium
    chromium.close()


# Runs in the page: waits for MathJax and the widgets, then reports.
INSPECT_PAGE = r"""
(async () => {
  const sleep = (ms) => new Promise((done) => setTimeout(done, ms));
  const hasMath = document.querySelector(".math") !== null;
  for (let i = 0; i < 200 && hasMath && !(window.MathJax && MathJax.startup
       && MathJax.startup.promise); i++) await sleep(50);
  if (window.MathJax && MathJax.startup) await MathJax.startup.promise;
  const views = [...document.querySelectorAll(
    'script[type="application/vnd.jupyter.widget-view+json"]')];
  const rendered = (s) => {
    const area = s.previousElementSibling;
    return area !== null && area.querySelector(".jupyter-widgets") !== null;
  };
  for (let i = 0; i < 300 && !views.every(rendered); i++) await sleep(50);
  await Promise.all([...document.images].map((img) => img.complete ? null
    : new Promise((done) => { img.onload = img.onerror = done; })));
  const main = document.querySelector("main") || document.body;
  const text = main.cloneNode(true);
  text.querySelectorAll("pre, code, script, style, mjx-container, .highlight")
    .forEach((e) => e.remove());
  const tex = new RegExp(".{0,30}(\\$\\$|\\\\[()\\[\\]]|\\\\begin\\{|\\\\frac"
    + "|\\$[^$\\s][^$]*\\$).{0,30}", "g");
  return {
    math: document.querySelectorAll(".math").length,
    typeset: document.querySelectorAll("mjx-container").length,
    untypeset: [...document.querySelectorAll(".math")]
      .filter((e) => !e.querySelector("mjx-container"))
      .map((e) => e.textContent.slice(0, 80)),
    rawTex: (text.textContent.match(tex) || []).slice(0, 5),
    images: [...document.images].map((i) => ({
      src: i.getAttribute("src").slice(0, 80),
      width: i.naturalWidth, height: i.naturalHeight})),
    widgetStates: document.querySelectorAll(
      'script[type="application/vnd.jupyter.widget-state+json"]').length,
    widgetViews: views.length,
    unrendered: views.filter((s) => !rendered(s)).length,
    // sliders, drop-downs and other controls: ipywidgets gives each a
    // widget-* class ("widget-hslider", "widget-dropdown", ...)
    controls: document.querySelectorAll(
      ".widget-inline-hbox, .widget-hslider, .widget-dropdown, .widget-slider")
      .length,
    outputs: [...document.querySelectorAll(".widget-output")].map((e) =>
      e.querySelectorAll("img").length + e.textContent.trim().length),
    launch: [...document.querySelectorAll(
      '.dropdown-launch-buttons a[href*="colab.research.google.com"]')]
      .map((a) => a.href),
    colab: [...document.querySelectorAll(
      'a[href*="colab.research.google.com"]')].map((a) => a.href),
  };
})()
"""


def open_page(chromium: Chromium, path: Path, shots: dict[str, str]) -> dict:
    """Load ``path`` offline; return the page report and the browser's problems."""
    target = chromium.send("Target.createTarget", {"url": "about:blank"})["targetId"]
    session = chromium.send(
        "Target.attachToTarget", {"targetId": target, "flatten": True}
    )["sessionId"]
    for domain in ("Page", "Runtime", "Network", "Log"):
        chromium.send(f"{domain}.enable", session=session)
    chromium.send(
        "Network.emulateNetworkConditions",
        {
            "offline": True,
            "latency": 0,
            "downloadThroughput": -1,
            "uploadThroughput": -1,
        },
        session=session,
    )
    chromium.send(
        "Emulation.setDeviceMetricsOverride",
        {"width": 1280, "height": 900, "deviceScaleFactor": 1, "mobile": False},
        session=session,
    )
    chromium.send("Page.navigate", {"url": path.as_uri()}, session=session)
    chromium.wait_for("Page.loadEventFired", session)
    report = chromium.send(
        "Runtime.evaluate",
        {"expression": INSPECT_PAGE, "awaitPromise": True, "returnByValue": True},
        session=session,
        timeout=90,
    )["result"]["value"]
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for name, selector in shots.items():
        chromium.send(
            "Runtime.evaluate",
            {"expression": f"document.querySelector({selector!r}).scrollIntoView()"},
            session=session,
        )
        time.sleep(0.3)
        image = chromium.send("Page.captureScreenshot", {"format": "png"}, session)
        (SCREENSHOTS / name).write_bytes(base64.b64decode(image["data"]))

    problems = []
    for event in chromium.events:
        if event.get("sessionId") != session:
            continue
        method, params = event.get("method"), event.get("params", {})
        if method == "Network.requestWillBeSent":
            url = params["request"]["url"]
            if not url.startswith(("file:", "data:", "blob:", "about:")):
                problems.append(f"network request: {url}")
        elif method == "Network.loadingFailed":
            problems.append(f"failed to load: {params.get('errorText')}")
        elif method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            described = details.get("exception", {}).get("description")
            problems.append(f"exception: {described or details.get('text')}")
        elif method == "Runtime.consoleAPICalled" and params["type"] == "error":
            values = [str(a.get("value", a.get("description"))) for a in params["args"]]
            problems.append(f"console error: {' '.join(values)}")
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            problems.append(f"log error: {params['entry']['text']}")
    chromium.events = [e for e in chromium.events if e.get("sessionId") != session]
    chromium.send("Target.closeTarget", {"targetId": target})
    report["problems"] = problems
    return report


def uses_widgets(entry: str) -> bool:
    notebook = ROOT / f"{entry}.ipynb"
    if not notebook.is_file():
        return False
    code = "".join(
        "".join(c["source"])
        for c in load(notebook)["cells"]
        if c["cell_type"] == "code"
    )
    return "ipywidgets" in code


@pytest.mark.parametrize("entry", PAGES)
def test_page_renders_offline_in_chromium(browser, built_book, entry):
    name = entry.rsplit("/", 1)[-1]
    shots = {f"{name}.png": "body"}
    widgets = uses_widgets(entry)
    if widgets:
        shots[f"{name}-widgets.png"] = ".widget-subarea"
    report = open_page(browser, built_book / f"{entry}.html", shots)

    assert report["problems"] == []
    # Maths: every formula typeset by the local MathJax, no TeX left as text.
    assert report["untypeset"] == [], report["untypeset"]
    assert report["typeset"] >= report["math"]
    assert report["rawTex"] == [], report["rawTex"]
    # Figures and badges: every image loaded with a size.
    unloaded = [i for i in report["images"] if not (i["width"] and i["height"])]
    assert unloaded == []
    # Widgets: the state was saved at execution and every view is drawn.
    if widgets:
        assert report["widgetStates"] == 1 and report["widgetViews"] >= 1
        assert report["unrendered"] == 0 and report["controls"] >= 1
        assert report["outputs"] and all(report["outputs"]), report["outputs"]
    else:
        assert report["widgetViews"] == 0
    # Colab: the launch button and the badge open this very notebook.
    if (ROOT / f"{entry}.ipynb").is_file():
        expected = colab_url(f"{entry}.ipynb")
        assert report["launch"] == [expected]
        assert set(report["colab"]) == {expected} and len(report["colab"]) == 2
    else:
        assert report["colab"] == []
    for shot in shots:
        assert (SCREENSHOTS / shot).stat().st_size > 10_000, shot
