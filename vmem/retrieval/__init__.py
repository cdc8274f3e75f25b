"""Finding candidates: the retriever interface, recency and graph neighbours, BM25 (tantivy), vectors (usearch), embedders, and score fusion.

May import: storage, state, schemas, errors.
"""
