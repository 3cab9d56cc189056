"""Training and evaluation engines, shared by every method."""
