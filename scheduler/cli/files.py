"""Load a snapshot, policy or plan from a JSON or YAML file, or fail with one clear line."""

from __future__ import annotations

import difflib
import types
from typing import Annotated, Any, TypeVar, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

from scheduler.cli.documents import STDIN, parse, read_text
from scheduler.errors import UserError
from scheduler.model import ClusterSnapshot, PackingPolicy, Plan

M = TypeVar("M", bound=BaseModel)

# What to do, by pydantic error type; anything else means the value itself is wrong.
_TODO = {
    "missing": "add the field",
    "extra_forbidden": "remove the field or fix its spelling",
}
_VALUE_ERROR_PREFIX = "Value error, "


def load_snapshot(path: str) -> ClusterSnapshot:
    return load(path, ClusterSnapshot, "snapshot")


def load_policy(path: str | None) -> PackingPolicy:
    """The policy in the file, or the defaults when no file is given."""
    return PackingPolicy() if path is None else load(path, PackingPolicy, "policy")


def load_plan(path: str) -> Plan:
    return load(path, Plan, "plan")


def load(path: str, model: type[M], schema: str) -> M:
    name = "<stdin>" if path == STDIN else path
    data = parse(read_text(path), name)
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise describe(e, name, schema, model) from None


def describe(
    error: ValidationError, path: str, schema: str, model: type[BaseModel] | None = None
) -> UserError:
    """The first problem as one line: where (field path), what, and what to do. An unknown
    field comes first: a misspelt one also reads as the right one missing, and that line
    would hide the typo. `model` (what was validated) lets it suggest the field meant."""
    errors = error.errors(include_url=False)
    unknown = [e for e in errors if e["type"] == "extra_forbidden"]
    first = unknown[0] if unknown else errors[0]
    more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
    hint = f"see `wattpack schema {schema}`"
    msg = " ".join(str(first["msg"]).split())
    if first["type"] == "value_error" and msg.startswith(_VALUE_ERROR_PREFIX):
        # The model's own checks already name the object, the field and the fix.
        return UserError(f"{path}: {msg.removeprefix(_VALUE_ERROR_PREFIX)}{more}", hint)
    if unknown:
        return _unknown_field(first["loc"], path, model, errors, more, hint)
    where = field_path(first["loc"]) or "top level"
    if first["type"] == "int_parsing_size":
        # An integer beyond 64 bits fails before the field's own limit is checked: name it.
        low = str(first.get("input")).lstrip().startswith("-")
        limit = _limit(model, first["loc"], low) if model else None
        msg = f"too {'small' if low else 'large'}"
        msg += f"; the limit is {limit}" if limit is not None else ""
    got = "" if first["type"] in _TODO else _shown(first.get("input"))
    todo = _TODO.get(first["type"], "fix the value")
    return UserError(f"{path}: {where}: {msg}{got}{more}", f"{todo}; {hint}")


def _unknown_field(
    loc: tuple[int | str, ...],
    path: str,
    model: type[BaseModel] | None,
    errors: list[Any],
    more: str,
    hint: str,
) -> UserError:
    parent, name = loc[:-1], str(loc[-1])
    # The fields the model knows there; else those reported missing there (a typo's twin).
    known = _fields_at(model, parent) if model is not None else []
    known = known or [str(e["loc"][-1]) for e in errors if e["loc"][:-1] == parent]
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    meant = f" (did you mean {close[0]}?)" if close else ""
    todo = "fix its spelling" if close else "remove the field or fix its spelling"
    return UserError(f"{path}: unknown field {field_path(loc)}{meant}{more}", f"{todo}; {hint}")


def _fields_at(model: type[BaseModel], loc: tuple[int | str, ...]) -> list[str]:
    """The field names (aliases) of the object at `loc` in a `model` document."""
    types_here: list[Any] = [model]
    for part in loc:
        nxt: list[Any] = []
        for t in _flatten(types_here):
            if isinstance(part, str) and isinstance(t, type) and issubclass(t, BaseModel):
                for name, f in t.model_fields.items():
                    if part in (name, f.alias):
                        nxt.append(f.annotation)
            elif get_origin(t) in (list, tuple, set, dict):
                nxt.extend(get_args(t)[-1:])  # the element, or a mapping's value
        types_here = nxt
    return [
        f.alias or name
        for t in _flatten(types_here)
        if isinstance(t, type) and issubclass(t, BaseModel)
        for name, f in t.model_fields.items()
    ]


def _flatten(annotations: list[Any]) -> list[Any]:
    """Optional[X] and X | Y as X, Y."""
    out: list[Any] = []
    for t in annotations:
        if get_origin(t) in (Union, types.UnionType):
            out += _flatten(list(get_args(t)))
        else:
            out.append(t)
    return out


def field_path(loc: tuple[int | str, ...]) -> str:
    """('pods', 3, 'gpuMilli') -> 'pods[3].gpuMilli'."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _shown(value: Any) -> str:
    if isinstance(value, dict | list):
        return f" (got a {'mapping' if isinstance(value, dict) else 'list'})"
    text = repr(value)
    return f" (got {text[:60]}{'...' if len(text) > 60 else ''})"


def _limit(model: type[BaseModel], loc: tuple[int | str, ...], low: bool) -> Any:
    """The ge (or gt) constraint of the field at loc if low, else its le (or lt); None where it
    has none. Read off the model's types."""
    t: Any = model
    meta: list[Any] = []
    for part in loc:
        t, meta = _unwrap(t)
        if isinstance(t, type) and issubclass(t, BaseModel) and isinstance(part, str):
            field = next((f for n, f in t.model_fields.items() if part in (n, f.alias)), None)
            if field is None:
                return None
            t, meta = field.annotation, list(field.metadata)
        elif get_origin(t) in (list, dict):
            t, meta = get_args(t)[-1], []
        else:
            return None
    _, more = _unwrap(t)
    names = ("ge", "gt") if low else ("le", "lt")
    for m in [*meta, *more]:
        for name in names:
            if getattr(m, name, None) is not None:
                return getattr(m, name)
    return None


def _unwrap(t: Any) -> tuple[Any, list[Any]]:
    """X | None -> X, Annotated[X, ...] -> X with its metadata."""
    meta: list[Any] = []
    while True:
        if get_origin(t) is Annotated:
            meta += list(t.__metadata__)
            t = get_args(t)[0]
        elif get_origin(t) in (Union, types.UnionType):
            args = [a for a in get_args(t) if a is not type(None)]
            if len(args) != 1:
                return t, meta
            t = args[0]
        else:
            return t, meta
