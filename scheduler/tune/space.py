"""What `wattpack tune` searches: PackingPolicy fields by their dotted camelCase path, each with
a range or a list of choices. `wattpack schema space` prints the JSON Schema; a shipped example
is examples/tune-space.yaml."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError, model_validator

from scheduler.errors import UserError
from scheduler.model import PackingPolicy
from scheduler.model.base import Wire


class FloatRange(Wire):
    low: float = Field(description="Smallest value tried.")
    high: float = Field(description="Largest value tried.")
    log: bool = Field(default=False, description="Sample on a log scale (low must be > 0).")


class IntRange(Wire):
    low: int = Field(description="Smallest value tried.")
    high: int = Field(description="Largest value tried.")


class Param(Wire):
    """One policy field and the values to try: exactly one of float, int or choices."""

    path: str = Field(
        description="The field in PackingPolicy, dotted camelCase, e.g. kindWeights.inference, "
        "moves.perCycle, solver.timeLimitSeconds."
    )
    float_range: FloatRange | None = Field(default=None, alias="float")
    int_range: IntRange | None = Field(default=None, alias="int")
    choices: list[bool | int | float | str | None] | None = Field(
        default=None, description="Values to choose among (null turns an optional field off)."
    )

    @model_validator(mode="after")
    def _one_kind(self) -> Param:
        given = [x for x in (self.float_range, self.int_range, self.choices) if x is not None]
        if len(given) != 1:
            raise ValueError(f"{self.path}: give exactly one of float, int or choices")
        r = self.float_range or self.int_range
        if r is not None and not r.low < r.high:
            raise ValueError(f"{self.path}: low {r.low} must be below high {r.high}")
        if self.float_range is not None and self.float_range.log and self.float_range.low <= 0:
            raise ValueError(f"{self.path}: a log range needs low > 0")
        if self.choices is not None and not self.choices:
            raise ValueError(f"{self.path}: choices is empty")
        return self

    def extremes(self) -> list[Any]:
        if self.float_range is not None:
            return [self.float_range.low, self.float_range.high]
        if self.int_range is not None:
            return [self.int_range.low, self.int_range.high]
        return list(self.choices or [])


class TuningSpace(Wire):
    api_version: Literal["wattpack.io/v1alpha1"] = Field(default="wattpack.io/v1alpha1")
    kind: Literal["TuningSpace"] = Field(default="TuningSpace")
    base: dict[str, Any] = Field(
        default_factory=dict,
        description="A PackingPolicy (its YAML fields) the searched values go into; {} = the "
        "default policy.",
    )
    params: list[Param] = Field(min_length=1, description="The fields searched.")

    @model_validator(mode="after")
    def _paths_exist(self) -> TuningSpace:
        try:
            # A valid base has a mapping wherever a searched value goes.
            PackingPolicy.model_validate(self.base)
        except ValidationError as e:
            err = e.errors(include_url=False)[0]
            where = ".".join(str(p) for p in ("base", *err["loc"]))
            raise ValueError(f"{where}: {err['msg']}; give the base a valid policy") from None
        seen = set()
        for p in self.params:
            if p.path in seen:
                raise ValueError(f"{p.path}: listed twice")
            seen.add(p.path)
            _field_of(p.path)
        return self

    def policy(self, values: dict[str, Any]) -> PackingPolicy:
        """The base policy with these values at their paths, validated (a value the policy
        refuses raises ValueError naming the field)."""
        raw = _deep_copy(self.base)
        for path, value in values.items():
            node = raw
            *parents, leaf = path.split(".")
            for key in parents:
                node = node.setdefault(key, {})
            node[leaf] = value
        return PackingPolicy.model_validate(raw)

    def base_values(self) -> dict[str, Any] | None:
        """The base policy's value at every path, where each lies in its range (the base can
        then be a trial of the study); None where one does not."""
        data = self.policy({}).model_dump(by_alias=True, mode="json")
        out: dict[str, Any] = {}
        for p in self.params:
            value: Any = data
            for key in p.path.split("."):
                value = value[key]
            r = p.float_range or p.int_range
            if r is not None:
                whole = p.int_range is None or isinstance(value, int)
                if value is None or not whole or not r.low <= value <= r.high:
                    return None
            elif value not in (p.choices or []):
                return None
            out[p.path] = value
        return out

    def check(self) -> None:
        """Every value at the ends of every range is a valid policy: a space that would make
        trials fail is refused before any runs."""
        for p in self.params:
            for value in p.extremes():
                try:
                    self.policy({p.path: value})
                except ValidationError as e:
                    err = e.errors()[0]
                    raise UserError(
                        f"space: {p.path} = {value!r} is not a valid policy value ({err['msg']})",
                        "narrow the range to values the policy accepts (wattpack schema policy)",
                    ) from None


def _deep_copy(d: dict[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, dict) else v for k, v in d.items()}


def _field_of(path: str) -> None:
    """Raises ValueError unless the path names a PackingPolicy field (by camelCase alias)."""
    model: type[BaseModel] | None = PackingPolicy
    for i, key in enumerate(path.split(".")):
        if model is None:
            raise ValueError(f"{path}: {'.'.join(path.split('.')[:i])} has no fields")
        fields = {(f.alias or name): f for name, f in model.model_fields.items()}
        if key not in fields:
            raise ValueError(f"{path}: {key} is not a field (known: {', '.join(sorted(fields))})")
        annotation = fields[key].annotation
        model = (
            annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel)
            else None
        )
