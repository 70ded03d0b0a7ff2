"""Drives the sandbox's reporter from a test, one command per stdin line, one JSON answer per line:

  seed FILE   registry items (JSON lines, low-level attribute values) written with BatchWriteItem
  tick T      one reporter invocation with "now" = T (RFC 3339), exactly as `gdprctl report --now T`

A subprocess, because attaching to the sandbox switches this process's environment and stdout to the
function's (the runtime does that per invocation), which a pytest process must not inherit.
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from pathlib import Path


def main(state_dir: str) -> int:
    warnings.simplefilter("ignore")
    from gdpr_sandbox.services import Sandbox

    out = sys.__stdout__
    sandbox = Sandbox.attach(Path(state_dir))
    ddb = sandbox.client("dynamodb")
    table = sandbox.env()["ReporterFunction"]["REGISTRY_TABLE"]
    for line in sys.stdin:
        verb, _, arg = line.strip().partition(" ")
        started = time.monotonic()
        if verb == "seed":
            items = [json.loads(x) for x in Path(arg).read_text().splitlines() if x.strip()]
            for start in range(0, len(items), 25):
                pending = {table: [{"PutRequest": {"Item": i}} for i in items[start : start + 25]]}
                while pending:
                    pending = ddb.batch_write_item(RequestItems=pending).get("UnprocessedItems") or {}
            answer = {"seeded": len(items)}
        elif verb == "tick":
            try:
                answer = {"summary": sandbox.report(arg)}
            except Exception as error:  # noqa: BLE001 - the test decides what a failed tick means
                answer = {"error": type(error).__name__}
        else:
            answer = {"error": f"unknown command {verb!r}"}
        answer["seconds"] = round(time.monotonic() - started, 3)
        out.write(json.dumps(answer, default=str) + "\n")
        out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
