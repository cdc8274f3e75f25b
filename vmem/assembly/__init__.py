"""Building a prompt: token counts, model profiles, the section budget table, packing and rendering, splitting documents into pages, summaries, trace diffs.

May import: state, schemas, errors.
"""
