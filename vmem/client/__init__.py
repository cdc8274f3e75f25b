"""The public API as a client of the actors (requests over a bus), and the wire formats published as JSON Schema.

May import: agent, paging, models, assembly, bus, state, schemas, errors.
"""
