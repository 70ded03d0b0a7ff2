"""AWS's own sample events (`sam local generate-event`), unchanged: from `../shared/aws-events/`
beside the repository when it is there, else the verbatim copy in `events/aws/`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "aws-events"
VENDORED = REPO / "events" / "aws"


def path(name: str) -> Path:
    shared = SHARED / name
    return shared if shared.exists() else VENDORED / name


def load(name: str) -> dict[str, Any]:
    return json.loads(path(name).read_text())
