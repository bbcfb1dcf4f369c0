"""Which docs page derives each public class/function, and which notebook shows it.

The API reference (docs/api/, generated at build time by conf.py) documents every public
class and function of the package: everything a module of ``npattention`` defines under a
name without a leading underscore, except in the modules listed in ``EXCLUDE``.  Each object
is shown under its shortest public path (``npattention.Linear`` rather than
``npattention.layers.Linear``).

Every module that defines public objects needs one entry in ``MODULES``; the build (with -W)
and ``tests/test_docs_api_map.py`` fail for a module without one, naming it.  When you add a
module, add a line here:

    "npattention.<module>": ("Title of its API page", "<docs page>[#anchor]", "<notebook stem>" or None),

``OBJECTS`` overrides the page or notebook for a single object (same tuple without the title).
Docs pages are names under docs/ without ``.md``; anchors are the page's heading slugs
(GitHub style: lower case, spaces to ``-``). Notebooks are file stems under notebooks/.
"""
import importlib
import re
import inspect
import pkgutil

PACKAGE = "npattention"

# Not part of the API reference: the demo scripts, the gradient-check registry's cases and the
# command line (documented in the README and gradcheck.md).
EXCLUDE = ("npattention.demos", "npattention.gradcheck_cases", "npattention.__main__")

# module -> (API page title, docs page[#anchor], notebook stem or None).  The order here is the
# order of the API reference's sections: foundation first, then attention, models, vision, tools.
MODULES = {
    "npattention.module": ("The Module contract", "contract", "01_getting_started"),
    "npattention.layers": ("Layers", "layers", "01_getting_started"),
    "npattention.losses": ("Losses", "layers", "01_getting_started"),
    "npattention.optim": ("Optimisers and schedules", "training", "01_getting_started"),
    "npattention.train": ("Training loop", "training", "01_getting_started"),
    "npattention.checkpoint": ("Checkpoints", "training", "01_getting_started"),
    "npattention.gradcheck": ("Gradient checking", "gradcheck", "02_gradient_checking"),
    "npattention.validate": ("Argument checks", "contract", None),
    "npattention.softmax": ("Softmax", "attention", "03_three_steps"),
    "npattention.masks": ("Masks", "multihead#mask-convention", "04_self_and_multihead_attention"),
    "npattention.attention.scores": ("Step 1: scores", "attention#step-1-score", "03_three_steps"),
    "npattention.attention.align": ("Step 2: align", "attention#step-2-align", "03_three_steps"),
    "npattention.attention.context": ("Step 3: context", "attention#step-3-context", "03_three_steps"),
    "npattention.attention.attention": ("Attention (the three steps composed)", "attention", "03_three_steps"),
    "npattention.attention.hard_demo": ("Hard attention demo task", "attention", "03_three_steps"),
    "npattention.attention.sdpa": ("Scaled dot-product attention", "multihead", "04_self_and_multihead_attention"),
    "npattention.attention.multihead": ("Multi-head attention", "multihead", "04_self_and_multihead_attention"),
    "npattention.attention.self_attention": ("Self, cross, causal and local attention", "multihead",
                                             "04_self_and_multihead_attention"),
    "npattention.attention.functional": ("Deprecated: attention.functional", "multihead", None),
    "npattention.positional": ("Positional encodings", "transformer", "05_positional_encoding"),
    "npattention.transformer": ("The Transformer", "transformer", "06_transformer"),
    "npattention.rnn": ("RNN, GRU, LSTM", "seq2seq", "07_seq2seq_attention"),
    "npattention.seq2seq": ("Seq2seq with attention", "seq2seq", "07_seq2seq_attention"),
    "npattention.vision.layers": ("Convolution, pooling, BatchNorm", "vision", "08_channel_attention"),
    "npattention.vision.channel": ("Channel attention", "vision", "08_channel_attention"),
    "npattention.vision.sagan": ("SAGAN self-attention", "vision_spatial", "09_spatial_and_self_attention_images"),
    "npattention.vision.stn": ("Spatial transformer", "vision_spatial", "10_spatial_transformer"),
    "npattention.vision.models": ("Attention CNN", "vision", "08_channel_attention"),
    "npattention.data.sequences": ("Toy sequence tasks", "transformer", "06_transformer"),
    "npattention.data.spiral": ("Spiral data", "training", "01_getting_started"),
    "npattention.data.glyphs": ("Glyph images", "vision", "08_channel_attention"),
    "npattention.viz": ("Plotting", "attention", "03_three_steps"),
    "npattention.backend": ("Backend (NumPy / CuPy)", "backend", "11_gpu_with_cupy"),
    "npattention.conformance": ("GPU conformance suite", "gpu", "11_gpu_with_cupy"),
}

# object's defining "module.name" -> (docs page[#anchor], notebook stem or None)
OBJECTS = {
    "npattention.vision.channel.SpatialAttention": ("vision", "09_spatial_and_self_attention_images"),
    "npattention.vision.channel.PixelAttention": ("vision", "09_spatial_and_self_attention_images"),
    "npattention.vision.channel.CBAM": ("vision", "09_spatial_and_self_attention_images"),
}


def _excluded(modname):
    return any(modname == e or modname.startswith(e + ".") for e in EXCLUDE)


def public_modules():
    """Every importable module of the package (but the excluded ones), package first."""
    pkg = importlib.import_module(PACKAGE)
    names = [PACKAGE] + sorted(m.name for m in pkgutil.walk_packages(pkg.__path__, PACKAGE + "."))
    return [importlib.import_module(n) for n in names if not _excluded(n)]


def public_objects():
    """``{defining module name: [(public path, object), ...]}`` for every public class and function.

    The public path is the shortest dotted path through the package that reaches the object
    (``npattention.Linear``), found by looking through every module's public names.
    """
    modules = public_modules()
    defined = {}  # id -> (module, name, obj)
    for mod in modules:
        for name, obj in vars(mod).items():
            if name.startswith("_") or not (inspect.isclass(obj) or inspect.isfunction(obj)):
                continue
            if obj.__module__ == mod.__name__ and getattr(obj, "__name__", None) == name:
                defined[id(obj)] = (mod.__name__, name, obj)
    paths = {}
    for mod in modules:
        for name, obj in vars(mod).items():
            if name.startswith("_") or id(obj) not in defined:
                continue
            path = f"{mod.__name__}.{name}"
            if id(obj) not in paths or path.count(".") < paths[id(obj)].count("."):
                paths[id(obj)] = path
    grouped = {}
    for key, (modname, _name, obj) in defined.items():
        grouped.setdefault(modname, []).append((paths[key], obj))
    for items in grouped.values():  # source order
        items.sort(key=lambda item: _source_line(item[1]))
    return grouped


def _source_line(obj):
    try:
        return inspect.getsourcelines(obj)[1]
    except (OSError, TypeError):
        return 0


def links_for(modname, obj_name=None):
    """``(docs page[#anchor], notebook stem or None)`` for a module, or for one of its objects."""
    if obj_name is not None and f"{modname}.{obj_name}" in OBJECTS:
        return OBJECTS[f"{modname}.{obj_name}"]
    _, page, notebook = MODULES[modname]
    return page, notebook


def slugify(title):
    """MyST's heading anchor (myst_heading_anchors): lower case, punctuation dropped, spaces to '-'."""
    title = re.sub(r"`([^`]*)`", r"\1", title)  # inline code renders as its text
    return re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")


def anchors(page_file):
    """The heading anchors of a Markdown page (headings outside code fences)."""
    out, fenced = set(), False
    with open(page_file, encoding="utf-8") as f:
        for line in f:
            if line.lstrip().startswith(("```", "~~~")):
                fenced = not fenced
            elif not fenced and re.match(r"#{1,6} ", line):
                out.add(slugify(line.lstrip("#").strip()))
    return out


def problems(docs_dir, notebooks_dir):
    """Human-readable problems with the mapping: unmapped modules, missing pages or notebooks."""
    import os

    out = []
    grouped = public_objects()
    for modname, items in grouped.items():
        if modname not in MODULES:
            names = ", ".join(path for path, _ in items[:5])
            out.append(f"module {modname} defines public objects ({names}) but has no entry in "
                       f"docs/api_map.py MODULES (add its title, docs page and notebook)")
            continue
        for path, obj in [(None, None)] + items:
            page, notebook = links_for(modname, None if obj is None else obj.__name__)
            page_file = os.path.join(docs_dir, page.split("#")[0] + ".md")
            if not os.path.exists(page_file):
                out.append(f"docs/api_map.py: {path or modname} -> docs page {page!r}: no file {page_file}")
            elif "#" in page and page.split("#")[1] not in anchors(page_file):
                out.append(f"docs/api_map.py: {path or modname} -> {page!r}: the page has no heading with "
                           f"that anchor (headings were renamed?)")
            if notebook is not None and not os.path.exists(os.path.join(notebooks_dir, notebook + ".ipynb")):
                out.append(f"docs/api_map.py: {path or modname} -> notebook {notebook!r}: "
                           f"no file notebooks/{notebook}.ipynb")
    for key in OBJECTS:
        modname, _, name = key.rpartition(".")
        if modname in grouped and name not in {obj.__name__ for _, obj in grouped[modname]}:
            out.append(f"docs/api_map.py OBJECTS: {key} is not a public object of {modname}")
    return out


# Docstrings are written to be read with help() first: plain text with ``code`` and a few lists.
# Before Sphinx parses one as reStructuredText, give every change of indentation the blank line
# reST wants (an indented line after a paragraph, a dedent after an indented block, a literal
# block after "::"), so a docstring that reads well in a terminal does not break the build.
# Tables and literal blocks are left as they are.

_BORDER = re.compile(r"^\s*=+( +=+)+\s*$")
_ITEM = re.compile(r"^(\s*)([*+-]|\d+[.)]|#\.|\(\d+\))\s+")


def _indent(line):
    return len(line) - len(line.lstrip())


def _content_indent(line):
    """Where the text of a line starts: after a list marker, if it has one."""
    m = _ITEM.match(line)
    return m.end() if m else _indent(line)


def blank_lines_for_rst(lines):
    """A docstring's lines (after autodoc's dedent) with the blank lines reST needs added."""
    lines, out, table, literal_at = list(lines), [], False, None
    for i, line in enumerate(lines):
        prev = out[-1] if out else ""
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        if literal_at is not None:  # inside a literal block: anything indented deeper than "::"
            if line.strip() and _indent(line) <= literal_at:
                literal_at = None
                if prev.strip():
                    out.append("")
            else:
                out.append(line)
                continue
        if _BORDER.match(line):
            if not table and prev.strip():
                out.append("")
            table = not table if not table else bool(nxt.strip())
            out.append(line)
            continue
        if table or not line.strip() or not prev.strip():
            out.append(line)
        elif _indent(line) > _content_indent(prev) and not prev.lstrip().startswith((".. ", ":")):
            out += ["", line]  # an indented block right after a paragraph line
        elif _indent(line) < _indent(prev) and not _ITEM.match(line) and _indent(line) < _content_indent(prev):
            out += ["", line]  # back out of an indented block or list
        else:
            out.append(line)
        if line.rstrip().endswith("::") and not table:
            literal_at = _indent(line)
            if nxt.strip():
                out.append("")
            block = _following_block(lines, i + 1)
            if block and min(_indent(lines[j]) for j in block) <= literal_at:
                # a literal block after a docstring's first line loses its indentation to
                # the docstring's dedent: give it back
                for j in block:
                    lines[j] = " " * (literal_at + 4) + lines[j]
    return out


def _following_block(lines, start):
    """Indices of the first run of non-blank lines at or after `start`."""
    while start < len(lines) and not lines[start].strip():
        start += 1
    end = start
    while end < len(lines) and lines[end].strip():
        end += 1
    return list(range(start, end))
