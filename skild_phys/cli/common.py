"""Parameter types and decorators shared by the subcommands."""

from __future__ import annotations

import contextlib
import functools
import math

import click


class FiniteFloat(click.ParamType):
    """A finite real number (no nan, no inf), optionally bounded below."""

    name = "number"

    def __init__(self, min: float | None = None, min_open: bool = False):
        self.min, self.min_open = min, min_open

    def convert(self, value, param, ctx):
        if isinstance(value, float) and math.isfinite(value):
            number = value
        else:
            try:
                number = float(value)
            except (TypeError, ValueError):
                self.fail(f"{value!r} is not a number", param, ctx)
            if not math.isfinite(number):
                self.fail(f"{value!r} is not a finite number", param, ctx)
        if self.min is not None and (number <= self.min if self.min_open else number < self.min):
            self.fail(f"{value} must be {'>' if self.min_open else '>='} {self.min:g}", param, ctx)
        return number


FINITE = FiniteFloat()


def finite(text: str) -> float:
    """float(text) that refuses nan and inf (for numbers inside list options)."""
    number = float(text)
    if not math.isfinite(number):
        raise ValueError(f"{text!r} is not a finite number")
    return number


def writes(*names: str):
    """Hold `outputs.lock` on the paths the named options give while the command runs."""

    def decorate(command):
        @functools.wraps(command)
        def wrapper(*args, **kwargs):
            from skild_base import outputs

            with contextlib.ExitStack() as stack:
                for name in names:
                    if kwargs.get(name) is not None:
                        stack.enter_context(outputs.lock(kwargs[name], "--" + name.replace("_", "-")))
                return command(*args, **kwargs)

        return wrapper

    return decorate
