"""Built-in tasks that make their own data, small models and a training loop, for `gradscope demo`.

The names load on first use (PEP 562), so that ``gradscope.tasks.defaults`` imports without torch.
"""

import importlib

from gradscope.tasks.defaults import TASK_NAMES

_WHERE = {"AddingTask": "adding", "Task": "base", "seeded_generator": "base", "CharLMTask": "charlm",
          "stdlib_text": "charlm", "CopyTask": "copy", "KINDS": "models", "SequenceModel": "models",
          "build_model": "models", "evaluate": "training", "train": "training"}


def __getattr__(name):
    if name == "TASKS":
        return dict(zip(TASK_NAMES, (__getattr__("AddingTask"), __getattr__("CopyTask"), __getattr__("CharLMTask"))))
    if name in _WHERE:
        return getattr(importlib.import_module(f"gradscope.tasks.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'gradscope.tasks' has no attribute {name!r}")


def make_task(name: str, seq_len: int):
    """A built-in task.

    Args:
        name: one of ``TASK_NAMES`` (``"adding"``, ``"copy"``, ``"charlm"``).
        seq_len: the sequence length.
    Returns:
        The Task (``batch``, ``loss``, ``describe``).
    Raises:
        ValueError: an unknown name.
    """
    tasks = __getattr__("TASKS")
    if name not in tasks:
        raise ValueError(f"unknown task {name!r}; choose one of {', '.join(tasks)}")
    return tasks[name](seq_len=seq_len)


__all__ = ["Task", "AddingTask", "CopyTask", "CharLMTask", "TASKS", "make_task", "stdlib_text",
           "KINDS", "SequenceModel", "build_model", "train", "evaluate", "seeded_generator"]
