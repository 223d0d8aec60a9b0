"""Distributed runtime of DEFT on Flower (Message API, flwr >= 1.42)."""
