"""Writes infra/template.yaml translated to plain CloudFormation (JSON), offline, for the scanners.

checkov does not expand AWS::Serverless::* resources, so `make lint` also scans what SAM turns them
into (roles, functions, permissions, the HTTP API stage). Same translator call as the sandbox's.

usage: python tools/translate_template.py OUT.json
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from gdpr_sandbox import cfn_yaml, paths
from gdpr_sandbox.stack import translate

REGION = "eu-west-1"


def translated() -> dict:
    os.environ.setdefault("AWS_DEFAULT_REGION", REGION)  # the translator asks boto3 for a region
    template = cfn_yaml.load(paths.TEMPLATE)
    # Code locations only matter to deployment; any S3 URI translates to the same resources.
    code_uris = {
        logical_id: f"s3://lint-placeholder/{logical_id}.zip"
        for logical_id, resource in template["Resources"].items()
        if resource["Type"] in ("AWS::Serverless::Function", "AWS::Serverless::LayerVersion")
    }
    return translate(template, {}, REGION, code_uris)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    Path(argv[1]).write_text(json.dumps(translated(), indent=1, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
