"""The documentation site's promises that can be checked without Sphinx.

* every public class and function belongs to a module that docs/api_map.py maps to a docs page
  (that exists, with the named heading) and a notebook (that exists): a new module without an
  entry fails here, with the line to add;
* the docstring clean-up the API pages use keeps tables and code and adds only blank lines;
* CI builds the site with the README's command.
"""
import importlib.util
import inspect
import pathlib
import re
import warnings

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("api_map", ROOT / "docs" / "api_map.py")
api_map = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(api_map)


def test_every_public_object_has_a_docs_page_and_a_notebook():
    pending = []
    problems = api_map.problems(str(ROOT / "docs"), str(ROOT / "notebooks"), pending)
    assert problems == [], "\n".join(problems)
    for module in api_map.MODULES:  # every entry names a page, and a notebook that exists or is announced
        page, notebook = api_map.links_for(module)
        assert page and (notebook is None or len(notebook) == 2), module
    if pending:
        warnings.warn("API pages whose docs page or notebook is not written yet:\n" + "\n".join(pending), stacklevel=1)


def test_a_pending_page_is_reported_and_an_existing_one_is_not(monkeypatch):
    modules = dict(api_map.MODULES)
    modules["npattention.layers"] = ("Layers", "no_such_page", "99")
    monkeypatch.setattr(api_map, "MODULES", modules)
    pending = []
    assert api_map.problems(str(ROOT / "docs"), str(ROOT / "notebooks"), pending) == []
    assert "npattention.layers: docs page no_such_page.md" in pending
    assert "npattention.layers: notebook 99" in pending
    assert not any(p.startswith("npattention.softmax:") for p in pending)
    assert api_map.notebook_stem("03", str(ROOT / "notebooks")) == "03_three_steps"


def test_public_objects_are_found_under_their_shortest_path():
    grouped = api_map.public_objects()
    paths = {path: obj for items in grouped.values() for path, obj in items}
    import npattention
    from npattention.attention.align import Reinforce
    from npattention.layers import Linear

    assert paths["npattention.Linear"] is Linear and "npattention.layers.Linear" not in paths
    assert paths["npattention.attention.Reinforce"] is Reinforce  # not re-exported at the top
    assert ("npattention.Linear", Linear) in grouped["npattention.layers"]
    assert not any(m.startswith(api_map.EXCLUDE) for m in grouped)  # no demos in the API pages
    # every class and function the package exports at the top level has an API entry
    exported = {id(o) for n, o in vars(npattention).items()
                if not n.startswith("_") and (inspect.isclass(o) or inspect.isfunction(o))}
    assert exported <= {id(o) for o in paths.values()}  # aliases (Attn) are documented under their own name
    assert len(paths) > 150


def test_an_unmapped_module_and_a_renamed_heading_are_reported(monkeypatch):
    modules = dict(api_map.MODULES)
    del modules["npattention.layers"]
    modules["npattention.attention.scores"] = ("Step 1", "attention#no-such-heading", "03")
    monkeypatch.setattr(api_map, "MODULES", modules)
    problems = api_map.problems(str(ROOT / "docs"), str(ROOT / "notebooks"))
    assert any("npattention.layers" in p and "no entry" in p for p in problems), problems
    assert any("no-such-heading" in p for p in problems), problems


def test_slugify_matches_myst_heading_anchors():
    assert api_map.slugify("Step 1: score") == "step-1-score"
    assert api_map.slugify("Hard: `HardAlign(mode=\"argmax\")`") == "hard-hardalignmodeargmax"
    assert "mask-convention" in api_map.anchors(ROOT / "docs" / "multihead.md")


@pytest.mark.parametrize("lines, expected", [
    # an indented line right after a paragraph line becomes a block of its own
    (["Returns the sum", "    s = a + b", "of both."], ["Returns the sum", "", "    s = a + b", "", "of both."]),
    # list continuation lines and plain paragraphs are left alone
    (["* one item", "  continued", "* two"], ["* one item", "  continued", "* two"]),
    # a literal block after '::' gets its blank line, and its indentation back after the dedent
    (["As in torch::", "a <- b", "c <- d", "", "Done."], ["As in torch::", "", "    a <- b", "    c <- d", "",
                                                         "Done."]),
    # simple tables keep their continuation rows
    (["Table", "", "===  ====", "a    b", "     c", "===  ===="], ["Table", "", "===  ====", "a    b", "     c",
                                                                  "===  ===="]),
])
def test_docstring_blank_lines_for_rst(lines, expected):
    assert api_map.blank_lines_for_rst(lines) == expected


def test_every_public_docstring_parses_as_rst():
    """The check Sphinx -W makes on the API pages, here where docutils is installed (docs extra)."""
    docutils_core = pytest.importorskip("docutils.core")
    from docutils.utils import Reporter

    bad = []
    for items in api_map.public_objects().values():
        for path, obj in items:
            doc = inspect.getdoc(obj)
            if not doc:
                continue
            text = "\n".join(api_map.blank_lines_for_rst(doc.splitlines()))
            text = re.sub(r":\w+:`", "`", text)  # Sphinx roles are unknown to plain docutils
            doctree = docutils_core.publish_doctree(text, settings_overrides={"report_level": 5, "halt_level": 5})
            messages = [m for m in doctree.findall(lambda n: n.tagname == "system_message")
                        if m["level"] >= Reporter.WARNING_LEVEL]
            if messages:
                bad.append(f"{path}: {messages[0].astext()[:200]}")
    assert bad == [], "\n".join(bad)


def test_ci_builds_the_site_with_the_readme_command():
    readme = (ROOT / "README.md").read_text()
    block = readme.split("<!-- docs-build -->")[1].split("<!-- /docs-build -->")[0]
    build = next(line for line in block.splitlines() if "sphinx-build" in line)
    assert "-W" in build.split() and build.endswith("docs docs/_build/html")
    ci = (ROOT / ".ci" / "run").read_text()
    assert build in ci.splitlines()
