"""The scenario model's base: generations, the error every bad input raises, and the strict
pydantic base class (units in field names; a single value where a list is expected is a list)."""

from __future__ import annotations

import types
from functools import cache
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, model_validator

PosFloat = Annotated[float, Field(gt=0)]
NonNegFloat = Annotated[float, Field(ge=0)]
Fraction = Annotated[float, Field(ge=0, le=1)]

GENERATIONS = ("ws2008r2", "ws2012", "ws2012r2", "ws2016")
Generation = Literal["ws2008r2", "ws2012", "ws2012r2", "ws2016"]
CONFIG_VERSIONS = ("5.0", "6.2", "7.0", "7.1", "8.0", "8.1", "8.2", "8.3", "9.0", "9.1", "9.2", "9.3", "10.0")


class ScenarioError(Exception):
    """A scenario that cannot run: names the file, the field path and the reason."""

    def __init__(self, file: str | None, problems: list[tuple[str, str]]):
        self.file = file or "<scenario>"
        self.problems = problems
        super().__init__(self.render())

    def render(self) -> str:
        if len(self.problems) == 1:
            path, reason = self.problems[0]
            return f"{self.file}: {path}: {reason}" if path else f"{self.file}: {reason}"
        lines = [f"{self.file}: {len(self.problems)} problems"]
        lines += [f"  {p}: {r}" if p else f"  {r}" for p, r in self.problems]
        return "\n".join(lines)


def _is_list_annotation(ann: Any) -> bool:
    if get_origin(ann) is list:
        return True
    if get_origin(ann) in (Union, types.UnionType):
        return any(_is_list_annotation(a) for a in get_args(ann))
    return False


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=False, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _scalar_is_a_one_item_list(cls, data: Any) -> Any:
        """A single value where a list is expected is a list of that one value
        (`generations: ws2016`, `--set backup.generations=ws2016`)."""
        if isinstance(data, dict):
            lists = _list_fields(cls)
            if any(k in lists and v is not None and not isinstance(v, list) for k, v in data.items()):
                return {k: [v] if k in lists and v is not None and not isinstance(v, list) else v
                        for k, v in data.items()}
        return data


@cache
def _list_fields(cls: type[BaseModel]) -> frozenset[str]:
    return frozenset(n for n, f in cls.model_fields.items() if _is_list_annotation(f.annotation))


