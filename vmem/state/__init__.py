"""The domain state: events folded into a namespace's state, block ids, namespaces, and the checks a stored event passes before it is folded.

May import: schemas, errors.
"""
