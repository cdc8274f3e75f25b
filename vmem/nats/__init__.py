"""NATS and JetStream: the connection, the NATS bus, the JetStream log and job queue, their admin client, and the server configuration for tenants.

May import: bus, storage, state, schemas, errors.
"""
