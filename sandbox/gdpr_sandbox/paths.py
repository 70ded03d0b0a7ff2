"""Where things are in the repository and where the sandbox keeps its run-time files."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = REPO / "infra" / "template.yaml"
SAMPLE_APP_TEMPLATE = REPO / "sandbox" / "sample-app.yaml"
DEMO_DIR = REPO / "events" / "demo"


def state_dir() -> Path:
    """`.sandbox/` in the repo unless GDPR_SANDBOX_DIR says otherwise (tests use a temp dir)."""
    path = Path(os.environ.get("GDPR_SANDBOX_DIR", REPO / ".sandbox"))
    path.mkdir(parents=True, exist_ok=True)
    return path
