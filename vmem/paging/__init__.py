"""The pager's policy: which blocks are resident (score-aware or LRU selection), faults, evictions, pins, memory pressure, hand-off pointers.

May import: assembly, retrieval, storage, state, schemas, errors.
"""
