"""The wire formats: events in the log (:mod:`.events`, with upcasters for older versions), bus messages (:mod:`.messages`), and their codec.

Nothing here imports the rest of vmem but its error types: these are the
contracts every other part, and every program in another language, builds on.
"""
