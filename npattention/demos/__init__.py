"""The demos behind ``python -m npattention demo NAME``.

``positive_int``, ``nonneg_int`` and ``positive_float`` are argparse types: a bad value
(``--epochs 0``, ``--lr -1``) is reported by argparse in one line with exit status 2,
like any other argument error, instead of a traceback from deep inside training.
"""
import argparse
import math


def _number(kind, text, ok, what):
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if not ok(value):
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return value


def positive_int(text):
    return _number(int, text, lambda v: v > 0, "a positive integer")


def nonneg_int(text):
    return _number(int, text, lambda v: v >= 0, "an integer >= 0")


def positive_float(text):
    return _number(float, text, lambda v: 0 < v < math.inf, "a positive number")


def nonneg_float(text):
    return _number(float, text, lambda v: 0 <= v < math.inf, "a number >= 0")
