"""The server ScaNN index trained on a sample and assembled from rows encoded in Beam workers."""
