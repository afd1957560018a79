"""Why something could not be observed: one shape for every probe, so a check says it the same way everywhere."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """A kind a test or report can match, what failed and where (one line), and what the operator does next.

    `str(problem)` is the operator's line: the message, then the next step.
    """

    kind: str
    message: str
    next_step: str = ""

    def __str__(self) -> str:
        if not self.next_step:
            return self.message
        return f"{self.message}{' ' if self.message.endswith('.') else '; '}{self.next_step}"
