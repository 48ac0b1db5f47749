"""Text classification on Hugging Face transformers: GLUE, ANLI, local files, rotten-tomatoes.

One module per job:
  models          what a model string names; θ0 (pretrained body, seeded head); LoRA's targets
  data            hub sets, local files and the rotten-tomatoes asset; labels; the three data roles
  cache           the tokenised sets, saved once in Arrow under $SWEEPER_CACHE
  task            the options a job may set, the checks, and the `Problem` built from them
"""

from sweeper.tasks.text.data import TASK_NAMES
from sweeper.tasks.text.models import BUILTIN_MODEL, module_names
from sweeper.tasks.text.task import build, check, options, ready

__all__ = ["BUILTIN_MODEL", "TASK_NAMES", "build", "check", "module_names", "options", "ready"]
