"""Where the state lives: the log interface and its LMDB backend, the block store, snapshots, the live view of a namespace, homes, and replay.

May import: state, schemas, errors.
"""
