"""What ``gradscope report`` and ``gradscope compare`` say about a RUN_DIR argument.

The library's own messages speak to Python callers (a Scope, a ``gradscope.load`` run); on the
command line only a folder can be given, so the commands check it first and speak of that.
"""

from pathlib import Path

WHERE_RUNS_COME_FROM = ("the folder a training script passed as gradscope.watch(model, "
                        "run_dir=...), or one of a demo's, e.g. reports/demo/runs/lstm")


def run_folder_problem(path: Path) -> "str | None":
    """Why ``path`` cannot be a run folder before anything is read, or None.

    Args:
        path: the RUN_DIR as given on the command line.
    Returns:
        A sentence naming the path and what to give instead, or None when it is a folder
        (whether it holds a run is ``gradscope.load``'s to say).
    """
    if not path.exists():
        return f"{str(path)!r} does not exist; give {WHERE_RUNS_COME_FROM}"
    if not path.is_dir():
        return f"{str(path)!r} is a file, not a run folder; give {WHERE_RUNS_COME_FROM}"
    return None


def load_run_folder(path: Path):
    """``gradscope.load(path)``, with a command-line message when it cannot be a run.

    Args:
        path: the RUN_DIR as given on the command line.
    Returns:
        The loaded ``Run``.
    Raises:
        ValueError: a sentence about ``path`` fit for the command's error line (a missing
            path, a file, a folder without a run, a damaged run).
    """
    from gradscope.store import load

    problem = run_folder_problem(path)
    if problem:
        raise ValueError(problem)
    try:
        return load(path)
    except (OSError, ValueError) as error:  # RunFormatError is a ValueError
        raise ValueError(str(error)) from error
