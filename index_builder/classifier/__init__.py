"""Classification by retrieval (CbR): an on-device image classifier built from labelled catalog embeddings.

The image tower, an L2 normalization, a fully connected layer whose weights are the
normalized embeddings of selected labelled items (its outputs are cosine similarities),
and a per-class aggregation of those similarities into one score per class; no training.
"""
