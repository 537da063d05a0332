"""Robbins–Monro tuning of Metropolis–Hastings step sizes (burn-in only), shared by the samplers."""

from __future__ import annotations

import numpy as np

__all__ = ["TARGET_ACCEPT", "adapt_steps"]

TARGET_ACCEPT = 0.35


def adapt_steps(steps: np.ndarray, accepted: np.ndarray, it: int) -> np.ndarray:
    """Robbins–Monro step-size tuning toward TARGET_ACCEPT (used during burn-in only)."""
    gain = min(0.5, 3.0 / np.sqrt(it + 1.0))
    return steps * np.exp(gain * (accepted - TARGET_ACCEPT))
