"""Embeddings in other systems' input formats (Vertex AI Vector Search)."""
