"""The one exception type for user mistakes: the CLI turns it into a one-line error."""


class InputError(ValueError):
    """Bad input from the user (parameters, paths, stores): reported in one sentence, exit code 2."""
