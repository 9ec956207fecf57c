"""A live malicious pickle payload for the safe-loading tests: loaded by an unrestricted
unpickler it runs a shell command that creates a marker file."""

import os


class ShellPayload:
    """Pickles to os.system("touch MARKER"): the marker exists afterwards iff the payload ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)
