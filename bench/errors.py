"""The one exception type for a user's mistake.

Raised anywhere for bad input (an unknown name, a malformed spec, a missing or corrupt file);
the CLI prints its message without a traceback and exits with status 2.
"""


class UserError(Exception):
    """A mistake the user can fix; the message names the problem and the fix."""


def unknown_name(kind: str, name: str, valid, plural: str | None = None) -> UserError:
    """An error for an unknown algorithm, model, dataset, split, option... listing the valid ones."""
    valid = sorted(valid)
    return UserError(f"unknown {kind} {name!r}; valid {plural or kind + 's'}: {', '.join(valid)}")
