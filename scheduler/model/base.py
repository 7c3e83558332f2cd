"""Common configuration for every wire type: camelCase names, frozen, unknown fields rejected."""

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel


class Wire(BaseModel):
    """A frozen type whose field names on the wire are camelCase (the snapshot-format contract);
    unknown fields and non-finite numbers are rejected."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        frozen=True,
        extra="forbid",
        allow_inf_nan=False,  # nan and inf compare false to every limit: never a valid value
    )


class ByKind(Wire):
    """One value per pod kind, as fields named training, fine_tuning and inference."""

    def of(self, kind: str):  # type: ignore[no-untyped-def]
        return getattr(self, str(kind).replace("-", "_"))
