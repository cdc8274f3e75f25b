"""The message bus: its interface (NATS core semantics), the in-process bus, subjects, the request/reply client call, and the job-queue interface.

May import: state, schemas, errors.
"""
