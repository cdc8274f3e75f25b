"""Building a prompt: token counts, model profiles, the section budget table, packing and rendering, splitting documents into pages, summaries, trace diffs.

May import: retrieval (BM25 terms), storage, state, schemas, errors.
"""
