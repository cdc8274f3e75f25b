"""Models: the interface, the deterministic offline model, and httpx adapters for OpenAI-compatible and Anthropic APIs (chat, and OpenAI-compatible embeddings), with one retry planner.

May import: assembly, retrieval (the Embedder interface), schemas, errors.
"""
