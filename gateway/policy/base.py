"""What every part of the policy schema shares: strict frozen models and the name patterns."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict

MAX_STEPS = 16


MODEL_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:/@-]{0,127}$"


_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"


_STRUCTURAL_PARAMS = {"model", "messages", "stream"}


_METADATA_KEY = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"


#: Feedback metric names: short identifiers, so they are safe as metric labels.
METRIC_PATTERN = r"^[a-z][a-z0-9_]{0,39}$"


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_param_names(value: dict[str, Any]) -> dict[str, Any]:
    clash = sorted(_STRUCTURAL_PARAMS & value.keys())
    if clash:
        raise ValueError(f"{', '.join(clash)} cannot be set as a parameter")
    for name in value:
        if not re.fullmatch(r"[a-z_][a-z0-9_]*", name):
            raise ValueError(f"{name!r} is not a request parameter name")
    return value
