"""Reading a YAML config file into a pydantic model, with one clear line per problem."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


def load_yaml_model(path: str | Path, model: type[M], error: type[Exception]) -> M:
    """``path`` parsed as YAML and validated as ``model``; an unreadable file, invalid YAML or an invalid
    field raises ``error`` naming the file (and the field's dotted location)."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise error(f"cannot read {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise error(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        e = exc.errors()[0]
        raise error(f"{path}: {'.'.join(map(str, e['loc']))}: {e['msg'].removeprefix('Value error, ')}") from None
