"""Gradient-check cases, one file per area; every file here is imported by
:func:`npattention.gradcheck.registered`.  Each case function takes a seeded
:class:`npattention.backend.Generator` and yields :class:`npattention.gradcheck.Case`
objects at two or more shapes."""
