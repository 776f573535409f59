"""Simulated hardware: physical models, and devices that speak the real wire formats."""
