"""Waiting between tries: for a camera that dropped its connection, for a server that did not answer.

Shared by sources and sinks, which both retry what the network took from them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

__all__ = ["Backoff"]


@dataclass(frozen=True)
class Backoff:
    """Reconnect delays: ``initial * factor**n`` capped at ``cap``, each scaled by a random 0.5-1.0."""

    initial: float = 0.5
    cap: float = 30.0
    factor: float = 2.0

    def delay(self, attempt: int, rng: random.Random) -> float:
        base = min(self.cap, self.initial * self.factor ** max(0, attempt - 1))
        return base * rng.uniform(0.5, 1.0)
