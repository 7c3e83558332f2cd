"""The one error type a user sees: what is wrong (naming the field) and what to do about it."""

from __future__ import annotations

# Every character str.splitlines() breaks at, written as its escape.
_ESCAPED_BREAKS = {ord(c): repr(c)[1:-1] for c in "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"}


class UserError(Exception):
    """Bad input from a user: a file, a flag, an object. The CLI maps it to exit code 2."""

    def __init__(self, reason: str, todo: str) -> None:
        super().__init__(f"{reason}; {todo}")
        self.reason = reason
        self.todo = todo

    def line(self) -> str:
        # One line whatever the input quoted into it: a newline from a file shows as \n.
        return f"error: {self.reason}; {self.todo}".translate(_ESCAPED_BREAKS)
