"""The one error type a user sees: what is wrong (naming the field) and what to do about it."""

from __future__ import annotations


class UserError(Exception):
    """Bad input from a user: a file, a flag, an object. The CLI maps it to exit code 2."""

    def __init__(self, reason: str, todo: str) -> None:
        super().__init__(f"{reason}; {todo}")
        self.reason = reason
        self.todo = todo

    def line(self) -> str:
        return f"error: {self.reason}; {self.todo}"
