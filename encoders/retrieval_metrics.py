"""Paired retrieval metrics: only the paired item counts as correct."""

from __future__ import annotations

import numpy as np


def paired_recall_at_k(queries: np.ndarray, targets: np.ndarray, ks: tuple[int, ...] = (1, 10)) -> dict[int, float]:
    """Fraction of queries i whose paired target i ranks within the top k by dot product."""
    scores = queries @ targets.T
    paired = np.diagonal(scores)
    # Rank = how many targets score strictly higher than the paired one.
    ranks = (scores > paired[:, None]).sum(axis=1)
    return {k: float(np.mean(ranks < k)) for k in ks}


def dual_encoder_report(image_embeddings: np.ndarray, text_embeddings: np.ndarray) -> dict[str, float]:
    text_to_image = paired_recall_at_k(text_embeddings, image_embeddings)
    image_to_text = paired_recall_at_k(image_embeddings, text_embeddings)
    return {
        "pairs": len(image_embeddings),
        "text_to_image_recall@1": text_to_image[1],
        "text_to_image_recall@10": text_to_image[10],
        "image_to_text_recall@1": image_to_text[1],
        "image_to_text_recall@10": image_to_text[10],
    }
