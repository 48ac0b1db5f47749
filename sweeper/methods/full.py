"""Full fine-tuning: every weight trains. The baseline perf_full is measured with it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sweeper.methods.base import Method, Trial

if TYPE_CHECKING:
    from torch import nn

    from sweeper.tasks import Problem


class Full(Method):
    name = "full"
    searched = False

    def wrap(self, problem: Problem, trial: Trial) -> nn.Module:
        return problem.model


FULL = Full()
