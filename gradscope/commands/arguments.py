"""argparse types the commands share."""

import argparse


def positive_int(text: str) -> int:
    """argparse type: a whole number >= 1 (argparse names the flag in its error).

    Args:
        text: the flag's value as typed.
    Returns:
        The number.
    Raises:
        argparse.ArgumentTypeError: not a whole number, or below 1.
    """
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {value}")
    return value
