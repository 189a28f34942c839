"""A Sphinx extension for the book: offline pages and a cache per run profile.

Loaded by Jupyter Book through ``sphinx: extra_extensions`` in ``_config.yml``.
It does the following.

Execution cache per profile
    jupyter-cache recognises a notebook by the source of its code cells, not by
    the environment it ran in, so a build under another ``CRBOOK_PROFILE`` would
    reuse outputs computed at the wrong sizes. The extension appends the active
    profile (:func:`crbook.profile`) to ``nb_execution_cache_path``: by default
    the cache of a build into ``_build/html`` is ``_build/.jupyter_cache/<profile>``.

Offline rendering
    MathJax 3 and the ipywidgets HTML manager (its ``embed.js``, which renders
    the standard controls and output widgets without require.js) are served
    from the book's own ``_static/crbook-vendor`` folder instead of a CDN, so
    that equations and widgets appear in a book opened without a network. The
    npm tarballs are downloaded once from the registry, checked against their
    published sha512 integrity, unpacked into ``~/.cache/crbook/vendor`` (or
    ``$XDG_CACHE_HOME/crbook/vendor``) and copied into every HTML build.
    ``mathjax_path`` and ``nb_ipywidgets_js`` are set to the local copies.
    Pages with widgets also load a few lines of this extension's own script
    that give MathJax 3 the ``MathJax.Hub.Queue`` call the widget library
    still makes (a MathJax 2 interface) to typeset widget labels.

Tidy script tags
    Each page's script list is de-duplicated (sphinx-thebe adds its
    configuration twice, which declares a JavaScript constant twice and raises
    an error), and sphinx-thebe's scripts, which would fetch thebe from a CDN,
    are dropped while ``launch_buttons.thebe`` is off.

Limitations on the API page
    The directive ``crbook-limitations:: MODULE`` (in an ``eval-rst`` block)
    shows the "Limitations" section of ``MODULE``'s docstring in a warning box,
    so that the API page states what the private module behind a public name
    cannot do.

Warnings fail every build
    After a build that ended with warnings under ``-W``, the saved environment
    is deleted, so that the next build reads every page again and reports the
    warnings again instead of passing because nothing changed.

A local "Open in Colab" badge
    Every chapter's Markdown shows Colab's badge image, which lives on
    colab.research.google.com. In the HTML book the image is replaced by an
    inline SVG drawn here, so the page shows no broken image offline; the link
    itself is kept.

Cell timeout from the environment
    ``CRBOOK_CELL_TIMEOUT`` (seconds), when set, replaces ``execute.timeout`` of
    ``_config.yml``. The tests' smoke build sets it, so that a kernel that
    stops answering fails the build in minutes rather than half an hour.

Configuration values (all optional): ``crbook_vendor_cache`` (folder for the
tarballs, default as above) and ``crbook_npm_registry`` (default
``https://registry.npmjs.org``, or ``$CRBOOK_NPM_REGISTRY``).

Limitations
-----------
The cache key is still the code cells' source: a change to the ``crbook``
package that changes a chapter's results is not noticed, and the chapter must
be re-executed by hand (delete ``_build/.jupyter_cache/<profile>``). The
widget manager's ``embed.js`` draws the standard ipywidgets controls and
outputs only: a third-party widget library would need require.js and its own
vendored bundle. Pages of the dirhtml and singlehtml builders are not checked
by the book's tests.
"""

from __future__ import annotations

import base64
import hashlib
import importlib
import inspect
import os
import re
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.application import ENV_PICKLE_FILENAME, Sphinx
from sphinx.config import Config
from sphinx.errors import SphinxError
from sphinx.util.docutils import SphinxDirective

from crbook._profile import profile

__all__ = [
    "COLAB_BADGE_URL",
    "MATHJAX",
    "WIDGETS",
    "VendorError",
    "VendorPackage",
    "execution_cache_path",
    "fetch",
    "limitations",
    "setup",
]

STATIC_FOLDER = "crbook-vendor"
"""Folder inside the HTML build's ``_static`` that holds the vendored files."""

DEFAULT_REGISTRY = "https://registry.npmjs.org"

COLAB_BADGE_URL = "https://colab.research.google.com/assets/colab-badge.svg"


class VendorError(SphinxError):
    """A vendored JavaScript package could not be downloaded or checked."""

    category = "crbook offline assets"


@dataclass(frozen=True)
class VendorPackage:
    """One npm package whose files the HTML book serves itself.

    Attributes
    ----------
    name : str
        The npm name, for example ``"@jupyter-widgets/html-manager"``.
    version : str
        The exact version.
    integrity : str
        The registry's ``dist.integrity`` (``sha512-`` and base64).
    keep : tuple of str
        Paths inside the tarball's ``package/`` folder to unpack: a file, or a
        folder with everything below it.
    skip_suffixes : tuple of str
        File endings left out even below a kept folder (source maps).
    entry : str
        The script pages load, relative to the unpacked folder.
    """

    name: str
    version: str
    integrity: str
    keep: tuple[str, ...]
    entry: str
    skip_suffixes: tuple[str, ...] = (".map",)

    @property
    def folder(self) -> str:
        """The unpacked folder's name, e.g. ``"mathjax-3.2.2"``."""
        return f"{self.name.rsplit('/', 1)[-1]}-{self.version}"

    @property
    def tarball(self) -> str:
        """The tarball's file name on the registry."""
        return f"{self.folder}.tgz"

    def url(self, registry: str = DEFAULT_REGISTRY) -> str:
        """The tarball's address on ``registry``."""
        return f"{registry.rstrip('/')}/{self.name}/-/{self.tarball}"

    @property
    def static_path(self) -> str:
        """The entry script's path relative to the HTML ``_static`` folder."""
        return f"{STATIC_FOLDER}/{self.folder}/{self.entry}"

    def wanted(self, member: str) -> bool:
        """Whether the tarball member ``member`` (``package/...``) is unpacked."""
        parts = PurePosixPath(member).parts
        if len(parts) < 2 or parts[0] != "package" or ".." in parts:
            return False
        inner = "/".join(parts[1:])
        if inner.endswith(self.skip_suffixes):
            return False
        return any(
            inner == k or inner.startswith(k.rstrip("/") + "/") for k in self.keep
        )


# MathJax 3, the combined TeX + MathML input, CommonHTML output component,
# with the folders it loads on demand (TeX extensions, fonts, menu, a11y).
MATHJAX = VendorPackage(
    name="mathjax",
    version="3.2.2",
    integrity=(
        "sha512-Bt+SSVU8eBG27zChVewOicYs7Xsdt40qm4+UpHyX7k0/"
        "O9NliPc+x77k1/FEsPsjKPZGJvtRZM1vO+geW0OhGw=="
    ),
    keep=(
        "es5/tex-mml-chtml.js",
        "es5/a11y",
        "es5/adaptors",
        "es5/input",
        "es5/output",
        "es5/sre",
        "es5/ui",
        "LICENSE",
    ),
    entry="es5/tex-mml-chtml.js",
)

# The HTML widget manager of ipywidgets 8.1 (controls 5.0.13 and later). Its
# embed.js bundles the base, controls and output widgets and needs no loader.
WIDGETS = VendorPackage(
    name="@jupyter-widgets/html-manager",
    version="1.0.15",
    integrity=(
        "sha512-5thBIV6ymNgmPVOHvzx+gGy8ZSKmSazhtGw4/"
        "c4xJDVzRhG9PTeQsRjF3FUTopvFi//SABeNz1yp47bCrJ3CQA=="
    ),
    keep=(
        "dist/embed.js",
        "dist/embed.js.LICENSE.txt",
        # Font Awesome files that embed.js loads next to itself.
        *(
            f"dist/{name}"
            for name in (
                "1551f4f60c37af51121f.woff2",
                "7a3337626410ca2f4071.woff2",
                "d878b0a6a1144760244f.woff2",
                "2285773e6b4b172f07d9.woff",
                "bb58e57c48a3e911f15f.woff",
                "eeccf4f66002c6f2ba24.woff",
                "491974d108fe4002b2aa.ttf",
                "527940b104eb2ea366c8.ttf",
                "be9ee23c0c6390141475.ttf",
                "23f19bb08961f37aaf69.eot",
                "77206a6bb316fa0aded5.eot",
                "9bbb245e67a133f6e486.eot",
                "2f517e09eb2ca6650ff5.svg",
                "4689f52cc96215721344.svg",
                "7a8b4f130182d19a2d7c.svg",
            )
        ),
    ),
    entry="dist/embed.js",
)

PACKAGES: tuple[VendorPackage, ...] = (MATHJAX, WIDGETS)

_COMPLETE = ".complete"  # marks an unpacked folder whose extraction finished
_TIMEOUT_S = 60


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/crbook/vendor``, or ``~/.cache/crbook/vendor``."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "crbook" / "vendor"


def _integrity_ok(data: bytes, integrity: str) -> bool:
    algorithm, _, expected = integrity.partition("-")
    digest = hashlib.new(algorithm, data).digest()
    return base64.b64encode(digest).decode("ascii") == expected


def _download(package: VendorPackage, target: Path, registry: str) -> None:
    url = package.url(registry)
    try:
        with urllib.request.urlopen(url, timeout=_TIMEOUT_S) as response:  # noqa: S310
            data = response.read()
    except (urllib.error.URLError, OSError) as error:
        raise VendorError(
            f"cannot download {package.name} {package.version} from {url} "
            f"({error}). The book serves it from its own _static folder so "
            f"that pages work offline, and needs it once. Download that file "
            f"yourself, save it as {target}, and build again (or set "
            f"CRBOOK_NPM_REGISTRY to a reachable npm registry)."
        ) from error
    if not _integrity_ok(data, package.integrity):
        raise VendorError(
            f"{url} does not match the pinned integrity {package.integrity}; "
            f"nothing was saved. Check the registry or the pin in {__name__}."
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")
    partial.write_bytes(data)
    partial.replace(target)


def fetch(
    package: VendorPackage,
    cache_dir: Path | None = None,
    registry: str | None = None,
) -> Path:
    """Return the folder holding ``package``'s unpacked files, fetching it once.

    The tarball is looked for in ``cache_dir`` first (as ``package.tarball``)
    and downloaded from ``registry`` only when it is not there. Its sha512 must
    equal the pinned integrity.

    Parameters
    ----------
    package : VendorPackage
        What to fetch.
    cache_dir : pathlib.Path, optional
        Where tarballs and unpacked folders live; :func:`default_cache_dir`
        when omitted.
    registry : str, optional
        The npm registry's base address; ``$CRBOOK_NPM_REGISTRY`` or
        ``https://registry.npmjs.org`` when omitted.

    Returns
    -------
    pathlib.Path
        ``cache_dir / package.folder``, holding the kept files without the
        tarball's ``package/`` prefix.

    Raises
    ------
    VendorError
        If the registry cannot be reached and the tarball is not cached, or if
        a tarball does not match its integrity. The message names the address
        to fetch and the file to save it as.
    """
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    registry = registry or os.environ.get("CRBOOK_NPM_REGISTRY") or DEFAULT_REGISTRY
    unpacked = cache_dir / package.folder
    if (unpacked / _COMPLETE).is_file():
        return unpacked

    tarball = cache_dir / package.tarball
    if not tarball.is_file():
        _download(package, tarball, registry)
    elif not _integrity_ok(tarball.read_bytes(), package.integrity):
        raise VendorError(
            f"{tarball} does not match the pinned integrity {package.integrity} "
            f"of {package.name} {package.version}. Delete it and build again "
            f"to download {package.url(registry)}."
        )

    cache_dir.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{package.folder}-", dir=cache_dir))
    try:
        with tarfile.open(tarball, "r:gz") as archive:
            members = [
                m for m in archive.getmembers() if m.isfile() and package.wanted(m.name)
            ]
            if not any(m.name == f"package/{package.entry}" for m in members):
                raise VendorError(f"{tarball} holds no package/{package.entry}")
            archive.extractall(scratch, members=members, filter="data")
        (scratch / "package" / _COMPLETE).write_text(package.integrity + "\n")
        if unpacked.exists():  # an interrupted extraction: start again
            shutil.rmtree(unpacked)
        (scratch / "package").replace(unpacked)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return unpacked


def _sync_tree(source: Path, target: Path) -> None:
    """Copy ``source`` into ``target``, skipping files already there unchanged."""
    for path in source.rglob("*"):
        if not path.is_file() or path.name == _COMPLETE:
            continue
        destination = target / path.relative_to(source)
        stat = path.stat()
        if destination.is_file():
            existing = destination.stat()
            if existing.st_size == stat.st_size and existing.st_mtime >= stat.st_mtime:
                continue
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, destination)


# -- Sphinx events -------------------------------------------------------------


def execution_cache_path(configured: str, outdir: str | Path, active: str) -> str:
    """The jupyter-cache folder for the profile ``active``.

    Parameters
    ----------
    configured : str
        The ``nb_execution_cache_path`` of the configuration (``execute.cache``
        in ``_config.yml``); empty for myst-nb's default, the ``.jupyter_cache``
        folder next to the builder's output folder.
    outdir : str or pathlib.Path
        The builder's output folder, e.g. ``_build/html``.
    active : str
        The run profile, ``"smoke"``, ``"book"`` or ``"paper"``.

    Returns
    -------
    str
        ``<configured or outdir/../.jupyter_cache>/<active>``, absolute.
    """
    base = Path(configured) if configured else Path(outdir).parent / ".jupyter_cache"
    return str((base / active).resolve())


# @jupyter-widgets/base typesets widget labels with MathJax 2's
# ``MathJax.Hub.Queue(["Typeset", MathJax.Hub, element])``; MathJax 3 has no
# ``Hub``. Deferred scripts (MathJax) have run by DOMContentLoaded, and the
# widgets render later, at the window's load event.
MATHJAX2_SHIM = "mathjax2-hub-for-widgets.js"
_MATHJAX2_SHIM_JS = """\
// Written by crbook._sphinx: lets ipywidgets typeset labels with MathJax 3.
document.addEventListener("DOMContentLoaded", function () {
  var mj = window.MathJax;
  if (!mj || mj.Hub || typeof mj.typesetPromise !== "function") {
    return;
  }
  mj.Hub = {
    Queue: function (job) {
      var element = job && job[2];
      if (!element) {
        return;
      }
      var ready = (mj.startup && mj.startup.promise) || Promise.resolve();
      ready.then(function () {
        return mj.typesetPromise([element]);
      });
    },
  };
});
"""


def cell_timeout(value: str) -> int:
    """``CRBOOK_CELL_TIMEOUT`` as seconds: a positive whole number."""
    try:
        seconds = int(value.strip())
    except ValueError:
        seconds = 0
    if seconds <= 0:
        raise ValueError(
            f"CRBOOK_CELL_TIMEOUT must be a positive number of seconds, got {value!r}"
        )
    return seconds


def _configure(app: Sphinx, config: Config) -> None:
    config.nb_execution_cache_path = execution_cache_path(
        config.nb_execution_cache_path, app.outdir, profile()
    )
    if os.environ.get("CRBOOK_CELL_TIMEOUT"):
        config.nb_execution_timeout = cell_timeout(os.environ["CRBOOK_CELL_TIMEOUT"])
    config.mathjax_path = MATHJAX.static_path
    # In this order: the shim must register its listener before widgets load.
    config.nb_ipywidgets_js = {
        f"{STATIC_FOLDER}/{MATHJAX2_SHIM}": {},
        WIDGETS.static_path: {},
    }


def _vendor(app: Sphinx) -> None:
    if app.builder.format != "html":
        return
    cache = app.config.crbook_vendor_cache
    cache_dir = Path(cache) if cache else None
    registry = app.config.crbook_npm_registry or None
    static = Path(app.outdir) / "_static" / STATIC_FOLDER
    for package in PACKAGES:
        _sync_tree(fetch(package, cache_dir, registry), static / package.folder)
    shim = static / MATHJAX2_SHIM
    if not shim.is_file() or shim.read_text(encoding="utf-8") != _MATHJAX2_SHIM_JS:
        shim.write_text(_MATHJAX2_SHIM_JS, encoding="utf-8")


def _thebe_is_off(app: Sphinx) -> bool:
    options = getattr(app.config, "html_theme_options", None) or {}
    return not (options.get("launch_buttons") or {}).get("thebe")


def _is_thebe(script: Any) -> bool:
    name = str(getattr(script, "filename", "") or "")
    body = str(getattr(script, "attributes", {}).get("body", ""))
    return name.endswith("sphinx-thebe.js") or "THEBE_JS_URL" in body


def _tidy_scripts(
    app: Sphinx, pagename: str, templatename: str, context: dict, doctree: Any
) -> None:
    scripts = context.get("script_files")
    if not isinstance(scripts, list):
        return
    drop_thebe = _thebe_is_off(app)
    seen: set[tuple[str, tuple[tuple[str, str], ...]]] = set()
    kept = []
    for script in scripts:
        attributes = getattr(script, "attributes", {}) or {}
        key = (
            str(getattr(script, "filename", script)),
            tuple(sorted((str(k), str(v)) for k, v in attributes.items())),
        )
        if key in seen or (drop_thebe and _is_thebe(script)):
            continue
        seen.add(key)
        kept.append(script)
    scripts[:] = kept


_BADGE_SVG = (
    '<svg xmlns="http://www.w3.org/2000/svg" width="117" height="20" '
    'role="img" aria-label="Open in Colab">'
    '<rect width="117" height="20" rx="3" fill="#555"/>'
    '<rect x="22" width="95" height="20" rx="3" fill="#f9ab00"/>'
    '<rect x="22" width="6" height="20" fill="#f9ab00"/>'
    '<circle cx="8" cy="10" r="4.2" fill="none" stroke="#f9ab00" stroke-width="2.2"/>'
    '<circle cx="14" cy="10" r="4.2" fill="none" stroke="#e8710a" stroke-width="2.2"/>'
    '<text x="69.5" y="14" fill="#fff" font-family="Verdana,DejaVu Sans,sans-serif"'
    ' font-size="11" text-anchor="middle">Open in Colab</text></svg>'
)
BADGE_DATA_URI = "data:image/svg+xml;base64," + base64.b64encode(
    _BADGE_SVG.encode("utf-8")
).decode("ascii")


def _local_badge(app: Sphinx, doctree: nodes.document, docname: str) -> None:
    for image in doctree.findall(nodes.image):
        if image.get("uri") == COLAB_BADGE_URL:
            image["uri"] = BADGE_DATA_URI
            image["candidates"] = {"?": BADGE_DATA_URI}


_LIMITATIONS = re.compile(r"^Limitations\n-{3,}\n", re.MULTILINE)
_NUMPY_HEADING = re.compile(r"^\S[^\n]*\n-{3,}\n", re.MULTILINE)


def limitations(module: str) -> str:
    """The text of the "Limitations" section of ``module``'s docstring.

    Parameters
    ----------
    module : str
        A dotted module name, e.g. ``"crbook._rate"``.

    Returns
    -------
    str
        The section's body (reStructuredText), without its heading, up to the
        next numpy-style heading or the end of the docstring.

    Raises
    ------
    ValueError
        If the docstring has no "Limitations" section.
    """
    doc = inspect.cleandoc(importlib.import_module(module).__doc__ or "")
    found = _LIMITATIONS.search(doc)
    if found is None:
        raise ValueError(
            f"the docstring of {module} has no 'Limitations' section "
            f"(a line 'Limitations' underlined with dashes)"
        )
    rest = doc[found.end() :]
    following = _NUMPY_HEADING.search(rest)
    return (rest[: following.start()] if following else rest).strip()


class LimitationsDirective(SphinxDirective):
    """``.. crbook-limitations:: MODULE``: that module's limitations in a box."""

    required_arguments = 1
    has_content = False

    def run(self) -> list[nodes.Node]:
        module = self.arguments[0]
        try:
            text = limitations(module)
        except (ImportError, ValueError) as error:
            raise self.error(f"crbook-limitations: {error}") from error
        path = getattr(importlib.import_module(module), "__file__", None)
        if path:
            self.env.note_dependency(path)
        box = nodes.admonition("", classes=["warning"])
        box += nodes.title("", "Limitations")
        lines = StringList(text.splitlines(), source=f"docstring of {module}")
        self.state.nested_parse(lines, self.content_offset, box)
        return [box]


def _forget_env_after_warnings(app: Sphinx, exception: Exception | None) -> None:
    # Sphinx reports a page's warnings only when it reads the page, and keeps
    # the environment of a build that ended with warnings under -W
    # --keep-going: the next build, reading nothing new, would then pass.
    # Sphinx already drops the environment after an exception; drop it after
    # warnings too, so that every build until they are fixed fails.
    # (With -W --keep-going, Sphinx sets keep_going and clears warningiserror.)
    strict = app.warningiserror or getattr(app, "keep_going", False)
    if exception is None and strict and getattr(app, "_warncount", 0):
        environment = Path(app.doctreedir) / ENV_PICKLE_FILENAME
        environment.unlink(missing_ok=True)


def setup(app: Sphinx) -> dict[str, Any]:
    """Register the extension's configuration values and event handlers."""
    app.setup_extension("myst_nb")
    app.setup_extension("sphinx.ext.mathjax")
    app.add_config_value("crbook_vendor_cache", "", "env", [str])
    app.add_config_value("crbook_npm_registry", "", "env", [str])
    # After myst-nb and the math extension registered their values, before
    # myst-nb reads them (builder-inited).
    app.connect("config-inited", _configure, priority=900)
    app.connect("builder-inited", _vendor)
    app.connect("doctree-resolved", _local_badge)
    # Late, after the math and notebook extensions added this page's scripts.
    app.connect("html-page-context", _tidy_scripts, priority=900)
    app.add_directive("crbook-limitations", LimitationsDirective)
    app.connect("build-finished", _forget_env_after_warnings)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
