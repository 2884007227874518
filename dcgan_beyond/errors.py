"""Errors the user can fix, and their one-line texts."""


class UserError(Exception):
    """A problem the user can fix: main() prints it as one line and exits with status 2.
    Under torchrun only rank 0 prints it, unless it concerns one rank alone."""

    def __init__(self, message, same_on_every_rank=True):
        super().__init__(message)
        self.same_on_every_rank = same_on_every_rank


def reason(error):
    """The reason an OSError gives, or its text when it gives none."""
    return getattr(error, "strerror", None) or str(error) or type(error).__name__


def first_line(error):
    """An error's first line of text, or its type's name when it has none."""
    return (str(error).strip().splitlines() or [type(error).__name__])[0]
