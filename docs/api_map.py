"""Which docs page derives each public class/function, and which notebook shows it.

The API reference (docs/api/, generated at build time by conf.py) documents every public
class and function of the package: everything a module of ``npattention`` defines under a
name without a leading underscore, except in the modules listed in ``EXCLUDE``.  Each object
is shown under its shortest public path (``npattention.Linear`` rather than
``npattention.layers.Linear``).

Every module that defines public objects needs one entry in ``MODULES``; the build (with -W)
and ``tests/test_docs_api_map.py`` fail for a module without one, naming it.  When you add a
module, add a line here:

    "npattention.<module>": ("Title of its API page", "<docs page>[#anchor]", "<notebook number>" or None),

``OBJECTS`` overrides the page or notebook for a single object (same tuple without the title).
Docs pages are names under docs/ without ``.md``; anchors are the page's heading slugs
(GitHub style: lower case, spaces to ``-``).  Notebooks are given by their number (``"03"`` is
notebooks/03_*.ipynb).  A page or notebook that does not exist yet is "pending": the API page
names it without a link and the build lists it; a module with no entry at all is an error.
"""
import importlib
import re
import inspect
import pkgutil

PACKAGE = "npattention"

# Not part of the API reference: the demo scripts, the gradient-check registry's cases and the
# command line (documented in the README and gradcheck.md).
EXCLUDE = ("npattention.demos", "npattention.gradcheck_cases", "npattention.__main__")

# module -> (API page title, docs page[#anchor], notebook number or None).  The order here is the
# order of the API reference's sections: foundation first, then attention, models, vision, tools.
MODULES = {
    "npattention.module": ("The Module contract", "contract", "01"),
    "npattention.layers": ("Layers", "layers", "01"),
    "npattention.losses": ("Losses", "layers", "01"),
    "npattention.optim": ("Optimisers and schedules", "training", "01"),
    "npattention.train": ("Training loop", "training", "01"),
    "npattention.checkpoint": ("Checkpoints", "training", "01"),
    "npattention.gradcheck": ("Gradient checking", "gradcheck", "02"),
    "npattention.validate": ("Argument checks", "contract", None),
    "npattention.softmax": ("Softmax", "attention", "03"),
    "npattention.masks": ("Masks", "multihead#mask-convention", "04"),
    "npattention.attention.scores": ("Step 1: scores", "attention#step-1-score", "03"),
    "npattention.attention.align": ("Step 2: align", "attention#step-2-align", "03"),
    "npattention.attention.context": ("Step 3: context", "attention#step-3-context", "03"),
    "npattention.attention.attention": ("Attention (the three steps composed)", "attention", "03"),
    "npattention.attention.hard_demo": ("Hard attention demo task", "attention", "03"),
    "npattention.attention.sdpa": ("Scaled dot-product attention", "multihead", "04"),
    "npattention.attention.multihead": ("Multi-head attention", "multihead", "04"),
    "npattention.attention.self_attention": ("Self, cross, causal and local attention", "multihead",
                                             "04"),
    "npattention.attention.functional": ("Deprecated: attention.functional", "multihead", None),
    "npattention.positional": ("Positional encodings", "transformer", "05"),
    "npattention.transformer": ("The Transformer", "transformer", "06"),
    "npattention.rnn": ("RNN, GRU, LSTM", "seq2seq", "07"),
    "npattention.seq2seq": ("Seq2seq with attention", "seq2seq", "07"),
    "npattention.vision.layers": ("Convolution, pooling, BatchNorm", "vision", "08"),
    "npattention.vision.channel": ("Channel attention", "vision", "08"),
    "npattention.vision.sagan": ("SAGAN self-attention", "vision_spatial", "09"),
    "npattention.vision.stn": ("Spatial transformer", "vision_spatial", "10"),
    "npattention.vision.models": ("Attention CNN", "vision", "08"),
    "npattention.data.sequences": ("Toy sequence tasks", "transformer", "06"),
    "npattention.data.spiral": ("Spiral data", "training", "01"),
    "npattention.data.glyphs": ("Glyph images", "vision", "08"),
    "npattention.viz": ("Plotting", "attention", "03"),
    "npattention.backend": ("Backend (NumPy / CuPy)", "backend", "11"),
    "npattention.conformance": ("GPU conformance suite", "gpu", "11"),
    # modules added with the docs site (a page or notebook that does not exist yet is reported as pending)
    "npattention.attention.tiled": ("Tiled (flash-style) attention", "tiled", "15"),
    "npattention.attention.rotary": ("Rotary position embeddings (RoPE)", "modern_attention", "17"),
    "npattention.attention.alibi": ("ALiBi", "modern_attention", "17"),
    "npattention.attention.relative_bias": ("Relative position bias", "modern_attention", "17"),
    "npattention.attention.positions": ("Attention positions (shared by RoPE, ALiBi, relative bias)",
                                        "modern_attention", "17"),
    "npattention.attention.grouped_query": ("Grouped-query attention", "modern_attention", "17"),
    "npattention.attention.linear_attention": ("Linear attention", "modern_attention", "17"),
    "npattention.decoding": ("Decoding: KV cache, greedy, sampling, beam search", "decoding", "16"),
    "npattention.gpt": ("GPT (decoder-only Transformer)", "decoding", "16"),
    "npattention.data.grammar": ("Toy grammar text", "decoding", "16"),
    "npattention.attention.band": ("Band (local) attention", "band_attention", "04"),
    "npattention.vision.multi_order": ("Multi-order and high-order attention (MogaNet, HorNet)", "multi_order", "12"),
    "npattention.sequence_models": ("Why self-attention: sequence encoders and read-outs", "why_self_attention", "13"),
    "npattention.data.long_range": ("Look-back task", "why_self_attention#the-look-back-task-make_lookbackn-t-d-vocab4", "13"),
    "npattention.data.task_types": ("The three task types", "why_self_attention#the-three-task-types-of-note-002", "13"),
    "npattention.data.retrieval": ("Retrieval task (hard attention)", "attention", "03"),
    "npattention.attention.kernel_regression": ("Attention as kernel regression (Nadaraya-Watson)",
                                                "kernel_regression", "14"),
    "npattention.data.kernel_regression": ("Kernel regression data", "kernel_regression", "14"),
    "npattention.data.periodic": ("Periodic sequences (length generalisation)", "modern_attention", "17"),
    "npattention.data.speech": ("Speech-like frames (truncated attention)", "multihead", "04"),
    "npattention.data.colour_pairs": ("Colour pairs (a query-dependent lookup for SAGAN)",
                                      "vision_spatial#21-a-task-that-needs-a-query-dependent-map-colour-pairs", "09"),
}

# object's defining "module.name" -> (docs page[#anchor], notebook number or None)
OBJECTS = {
    "npattention.vision.channel.SpatialAttention": ("vision", "09"),
    "npattention.vision.channel.PixelAttention": ("vision", "09"),
    "npattention.vision.channel.CBAM": ("vision", "09"),
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
        is_package = hasattr(mod, "__path__")  # a module's incidental imports are not exports
        for name, obj in vars(mod).items():
            if name.startswith("_") or id(obj) not in defined:
                continue
            if not is_package and defined[id(obj)][0] != mod.__name__:
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


def notebook_stem(number, notebooks_dir):
    """The file stem of notebook `number` ("03" -> "03_three_steps"), or None if there is none."""
    import glob
    import os

    found = sorted(glob.glob(os.path.join(notebooks_dir, f"{number}_*.ipynb")))
    return os.path.splitext(os.path.basename(found[0]))[0] if found else None


def links_for(modname, obj_name=None):
    """``(docs page[#anchor], notebook number or None)`` for a module, or for one of its objects."""
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


def problems(docs_dir, notebooks_dir, pending=None):
    """Errors in the mapping: modules without an entry, anchors no heading has, stale overrides.

    Pages and notebooks that do not exist (yet) are not errors: they are appended to the list
    `pending`, if one is given.
    """
    import os

    out = []
    grouped = public_objects()
    for modname, items in grouped.items():
        if modname not in MODULES:
            names = ", ".join(path for path, _ in items[:5])
            out.append(f"module {modname} defines public objects ({names}) but has no entry in "
                       f"docs/api_map.py MODULES (add its title, docs page and notebook)")
            continue
        overridden = [(path, obj) for path, obj in items if f"{modname}.{obj.__name__}" in OBJECTS]
        for path, obj in [(None, None)] + overridden:
            page, notebook = links_for(modname, None if obj is None else obj.__name__)
            page_file = os.path.join(docs_dir, page.split("#")[0] + ".md")
            where = path or modname
            if not os.path.exists(page_file):
                if pending is not None:
                    pending.append(f"{where}: docs page {page.split('#')[0]}.md")
            elif "#" in page and page.split("#")[1] not in anchors(page_file):
                out.append(f"docs/api_map.py: {where} -> {page!r}: the page has no heading with "
                           f"that anchor (headings were renamed?)")
            if notebook is not None and notebook_stem(notebook, notebooks_dir) is None and pending is not None:
                pending.append(f"{where}: notebook {notebook}")
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
