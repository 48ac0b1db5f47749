"""Trains one model: the loop, the subspace and compressed models."""
