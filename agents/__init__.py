"""Learned allocators: a gymnasium environment over a score table and an SB3 SAC strategy."""
