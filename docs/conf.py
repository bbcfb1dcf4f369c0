"""Sphinx configuration for the npattention documentation site.

Build (from the repository root; README "Documentation site"):

    pip install -e ".[docs]" && sphinx-build -W --keep-going -b html docs docs/_build/html

What this file does besides the usual settings (all generated files are git-ignored):

* ``docs/notebooks/``: the notebooks are copied there from ``notebooks/`` at the start of every
  build (only files that changed), with ``notebooks/README.md`` as their index page, so the
  notebooks live in git once and a new notebook appears in the site by itself.  MyST-NB
  executes them in fast mode (``NPATTENTION_FAST=1``; set it to 0 for the full runs) and caches
  the results in ``docs/_build/.jupyter_cache``: a notebook re-runs only when its code changes.
* ``docs/api/``: one page per module, generated from the package's public classes and
  functions (``docs/api_map.py``), each linking to the docs page that derives its backward and
  the notebook that shows it; a module missing from ``api_map.MODULES`` is a build warning
  (an error under ``-W``).
* The landing page's table of contents lists the pages of ``docs/`` in the order of
  ``docs/README.md`` (the GitHub-readable index), then any page not listed there, so a new
  page appears without editing a toctree; the notebooks follow ``notebooks/README.md``.
* Links written for GitHub (``../notebooks/x.ipynb`` from a docs page, ``../docs/x.md`` from a
  notebook) are rewritten to the site's own pages.
"""
import json
import os
import re
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))  # npattention, also when it is not pip-installed
sys.path.insert(0, str(DOCS))  # api_map

# The notebooks' kernels inherit this environment: fast mode unless asked otherwise, and
# matplotlib's inline backend (an inherited MPLBACKEND=Agg would drop every figure).
os.environ.setdefault("NPATTENTION_FAST", "1")
os.environ.pop("MPLBACKEND", None)
# tqdm.auto warns once per kernel that ipywidgets is missing; that is not part of any lesson
_quiet = "ignore:IProgress not found"
os.environ["PYTHONWARNINGS"] = ",".join(filter(None, [os.environ.get("PYTHONWARNINGS"), _quiet]))

import api_map  # noqa: E402
import npattention  # noqa: E402

project = "npattention"
author = "the npattention authors"
copyright = "2026, the npattention authors"
release = version = npattention.__version__

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.mathjax",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
]

# Markdown: $...$ and $$...$$ maths, \begin{align} blocks, ::: fences, heading anchors
# (pages link to each other's sections as [text](page.md#heading)).
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 4
myst_dmath_double_inline = True

# Notebooks: executed at build time, cached, a failing cell fails the build.
nb_execution_mode = os.environ.get("NPATTENTION_DOCS_EXECUTE", "cache")
nb_execution_cache_path = str(DOCS / "_build" / ".jupyter_cache")
nb_execution_timeout = 600
nb_execution_raise_on_error = True
nb_execution_show_tb = True
nb_merge_streams = True

autodoc_member_order = "bysource"
autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_typehints = "description"
napoleon_google_docstring = False  # "Parameters\n----------" sections (numpydoc), as in fit()

exclude_patterns = ["_build", "README.md", "Thumbs.db", ".DS_Store", "**/.ipynb_checkpoints"]
templates_path = []

html_theme = "sphinx_book_theme"
html_title = "npattention"
html_static_path = ["_static"]
html_css_files = ["custom.css"]
html_theme_options = {
    "show_toc_level": 2,
    "home_page_in_toc": True,
    "use_download_button": True,
    "navigation_with_keys": False,
}
html_last_updated_fmt = None

# ---------------------------------------------------------------------------------------------
# Notebooks: copy notebooks/ into docs/notebooks/ (git-ignored)

NB_SRC = ROOT / "notebooks"
NB_DST = DOCS / "notebooks"


def _site_links(text, where):
    """Rewrite GitHub-relative links to the site's layout."""
    if where == "notebooks":  # a notebook in notebooks/ links to ../docs/page.md
        return text.replace("](../docs/README.md", "](../index.md").replace("](../docs/", "](../")
    # a docs page links to ../notebooks/x.ipynb
    return text.replace("](../notebooks/README.md", "](notebooks/index.md").replace("](../notebooks/", "](notebooks/")


def _write_if_changed(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        path.write_text(text, encoding="utf-8")


def _linked(readme, suffix):
    """Link targets ending in `suffix` in a README, in order, without repeats."""
    seen = []
    for target in re.findall(r"\]\(([^)#\s]+)", readme):
        if target.endswith(suffix) and "/" not in target and target not in seen:
            seen.append(target)
    return seen


def notebooks_in_order():
    """Notebook stems in notebooks/README.md's order, then any notebook it does not list."""
    readme = (NB_SRC / "README.md").read_text(encoding="utf-8")
    present = sorted(p.stem for p in NB_SRC.glob("*.ipynb"))
    listed = [t[: -len(".ipynb")] for t in _linked(readme, ".ipynb")]
    return [s for s in listed if s in present] + [s for s in present if s not in listed]


FAST_NOTE = ("```{note}\nThis page was executed when the site was built, in the notebooks' **fast mode** "
             "(`NPATTENTION_FAST=1`): small sizes and short training runs, so trained results are weaker "
             "than in class; where a run is too short for a claim, the notebook says so. Run it yourself "
             "without `NPATTENTION_FAST` for the full results.\n```")


def _with_mode_note(text):
    """The notebook's JSON with a note on the execution mode right under its title."""
    if os.environ.get("NPATTENTION_FAST") != "1":
        return text
    nb = json.loads(text)
    first = nb["cells"][0] if nb["cells"] else None
    if first is not None and first["cell_type"] == "markdown":
        source = "".join(first["source"])
        title, _, rest = source.partition("\n") if source.startswith("# ") else ("", "", source)
        first["source"] = (title + "\n\n" if title else "") + FAST_NOTE + "\n\n" + rest
    else:
        nb["cells"].insert(0, {"cell_type": "markdown", "id": "npattention-site-fast-mode", "metadata": {},
                               "source": FAST_NOTE})
    return json.dumps(nb, indent=1, ensure_ascii=False) + "\n"


def sync_notebooks():
    stems = notebooks_in_order()
    for stem in stems:
        text = (NB_SRC / f"{stem}.ipynb").read_text(encoding="utf-8")
        _write_if_changed(NB_DST / f"{stem}.ipynb", _with_mode_note(_site_links(text, "notebooks")))
    for old in NB_DST.glob("*.ipynb"):
        if old.stem not in stems:
            old.unlink()
    readme = _site_links((NB_SRC / "README.md").read_text(encoding="utf-8"), "notebooks")
    _write_if_changed(NB_DST / "index.md", readme)  # the landing page's toctree lists the notebooks


def docs_in_order():
    """Docs pages (names without .md) in docs/README.md's order, then the rest alphabetically."""
    readme = (DOCS / "README.md").read_text(encoding="utf-8")
    present = sorted(p.stem for p in DOCS.glob("*.md") if p.stem not in ("index", "README"))
    listed = [t[: -len(".md")] for t in _linked(readme, ".md")]
    return [s for s in listed if s in present] + [s for s in present if s not in listed]


# ---------------------------------------------------------------------------------------------
# API reference: docs/api/<module>.md, generated from the package (git-ignored)

API_DST = DOCS / "api"


def _see_also(modname, name=None):
    """'backward derived in <page> · shown in notebook <nb>' (pages not written yet: no link)."""
    page, notebook = api_map.links_for(modname, name)
    file, _, anchor = page.partition("#")
    if (DOCS / f"{file}.md").exists():
        text = f"backward derived in [{file}.md](../{file}.md" + (f"#{anchor}" if anchor else "") + ")"
    else:
        text = f"backward derived in `docs/{file}.md` (not written yet)"
    if notebook is not None:
        stem = api_map.notebook_stem(notebook, str(NB_SRC))
        text += (f" · shown in notebook [{stem}](../notebooks/{stem}.ipynb)" if stem
                 else f" · notebook {notebook} (not written yet)")
    return text


def _summary(obj):
    """The first sentence of a docstring, as Markdown for a table cell."""
    import inspect

    doc = inspect.getdoc(obj) or ""
    para = " ".join(doc.split("\n\n")[0].split())
    sentence, inside = "", False
    for i, ch in enumerate(para):  # stop at the first ". " outside ``code``
        if para.startswith("``", i):
            inside = not inside
        sentence += ch
        if ch == "." and not inside and (i + 1 == len(para) or para[i + 1] == " "):
            break
    sentence = re.sub(r":\w+:`~?([^`]*)`", r"`\1`", sentence)  # :class:`X` -> `X`
    sentence = sentence.replace("``", "`").rstrip(":")
    return sentence.replace("|", "\\|")


def generate_api():
    grouped = api_map.public_objects()
    modules = [m for m in api_map.MODULES if m in grouped] + sorted(m for m in grouped if m not in api_map.MODULES)
    pages = []
    for modname in modules:
        items = grouped[modname]
        title = api_map.MODULES.get(modname, (modname,))[0]
        slug = modname.replace(".", "_")
        pages.append(slug)
        lines = [f"# {title}", "", f"`{modname}`: {_see_also(modname) if modname in api_map.MODULES else ''}", ""]
        lines += ["```{eval-rst}", f".. automodule:: {modname}", "   :no-members:", "   :no-index:", "```", ""]
        lines += ["| object | what it is |", "|---|---|"]
        lines += [f"| {{py:obj}}`~{path}` | {_summary(obj)} |" for path, obj in items]
        lines += [""]
        for path, obj in items:
            kind = "autoclass" if isinstance(obj, type) else "autofunction"
            lines += ["```{eval-rst}", f".. {kind}:: {path}", "```", ""]
            if f"{modname}.{obj.__name__}" in api_map.OBJECTS:
                lines += [f"`{obj.__name__}`: {_see_also(modname, obj.__name__)}", ""]
        _write_if_changed(API_DST / f"{slug}.md", "\n".join(lines))
    for old in API_DST.glob("*.md"):
        if old.stem not in pages and old.stem != "index":
            old.unlink()
    index = ["# API reference", "",
             "Every public class and function, one page per module, generated from the docstrings. "
             "Each page links to the docs page that derives its backward pass and to the notebook that "
             "shows it.  Everything listed as `npattention.X` is importable as `import npattention as npa; "
             "npa.X`.", ""]
    for modname, slug in zip(modules, pages):
        title = api_map.MODULES.get(modname, (modname,))[0]
        names = ", ".join(f"`{path.rpartition('.')[2]}`" for path, _ in grouped[modname])
        index.append(f"- [{title}]({slug}.md) (`{modname}`): {names}")
    index += ["", "```{toctree}", ":hidden:", ""] + pages + ["```", ""]
    _write_if_changed(API_DST / "index.md", "\n".join(index))


def check_api_map(app):
    from sphinx.util import logging

    logger = logging.getLogger("npattention.docs")
    pending = []
    for problem in api_map.problems(str(DOCS), str(NB_SRC), pending):
        logger.warning(problem)
    for item in pending:
        logger.info(f"API page links pending (not written yet): {item}")


# ---------------------------------------------------------------------------------------------
# Landing page: the table of contents in reading order

def _toctree(caption, entries, maxdepth=1):
    body = "\n".join(entries)
    return f"```{{toctree}}\n:caption: {caption}\n:maxdepth: {maxdepth}\n:hidden:\n\n{body}\n```\n"


def on_source_read(app, docname, source):
    text = source[0]
    if docname == "index":
        toc = (_toctree("Derivations", docs_in_order())
               + _toctree("Notebooks", ["notebooks/index"] + [f"notebooks/{s}" for s in notebooks_in_order()])
               + _toctree("API reference", ["api/index"]))
        text = text.replace("<!-- toctrees -->", toc)
        if (DOCS / "syllabus.md").exists():
            text = text.replace("<!-- syllabus -->", "The [syllabus](syllabus.md) sets out the course week by week; "
                                                     "the pages below are listed in reading order.")
    if not docname.startswith(("notebooks/", "api/")):
        text = _site_links(text, "docs")
    source[0] = text


def on_include_read(app, relative_path, parent_docname, content):
    if Path(relative_path).parts[-1:] == ("README.md",) and (Path(app.srcdir) / relative_path).resolve().parent == ROOT:
        # the repository README, seen from docs/: its links to docs/x.md are site pages
        content[0] = content[0].replace("](docs/", "](")
    else:
        content[0] = _site_links(content[0], "docs")


def on_builder_inited(app):
    sync_notebooks()
    generate_api()
    check_api_map(app)


def on_process_docstring(app, what, name, obj, options, lines):
    lines[:] = api_map.blank_lines_for_rst(lines)


def setup(app):
    app.connect("autodoc-process-docstring", on_process_docstring)
    app.connect("builder-inited", on_builder_inited)
    app.connect("source-read", on_source_read)
    app.connect("include-read", on_include_read)
    return {"parallel_read_safe": True}
