"""Synthetic captioned scenes: the training and test catalog the project generates itself."""
