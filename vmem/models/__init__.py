"""Models: the interface, the deterministic offline model, and httpx adapters for OpenAI-compatible and Anthropic APIs (with retries).

May import: schemas, errors.
"""
