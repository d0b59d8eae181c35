"""Embeddings, the vector store, chunking and ingest: what retrieval and dynamic few-shot stand on."""
