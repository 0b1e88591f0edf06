"""Built-in tasks that make their own data, small models and a training loop, for `gradscope demo`."""

from gradscope.tasks.adding import AddingTask
from gradscope.tasks.base import Task, seeded_generator
from gradscope.tasks.charlm import CharLMTask, stdlib_text
from gradscope.tasks.copy import CopyTask
from gradscope.tasks.models import KINDS, SequenceModel, build_model
from gradscope.tasks.training import evaluate, train

TASKS = {"adding": AddingTask, "copy": CopyTask, "charlm": CharLMTask}


def make_task(name, seq_len):
    """The built-in task ``name`` at sequence length ``seq_len``."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; choose one of {', '.join(TASKS)}")
    return TASKS[name](seq_len=seq_len)


__all__ = ["Task", "AddingTask", "CopyTask", "CharLMTask", "TASKS", "make_task", "stdlib_text",
           "KINDS", "SequenceModel", "build_model", "train", "evaluate", "seeded_generator"]
