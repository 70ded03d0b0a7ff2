"""GDPR_SANDBOX_PARAMETERS: template parameters for the sandbox's stack, checked against the template."""

from __future__ import annotations

import pytest

from gdpr_sandbox.services import parameter_overrides


def test_parameters_are_read_from_key_value_pairs():
    assert parameter_overrides("UninstallGraceHours=24, UninstallChunkSize=50") == {
        "UninstallGraceHours": "24", "UninstallChunkSize": "50"}
    assert parameter_overrides("") == {}


@pytest.mark.parametrize(("text", "reason"), [
    ("UninstallGraceHours", "expected Key=Value"),
    ("=24", "expected Key=Value"),
    ("NoSuchParameter=1", "NoSuchParameter is not a parameter of infra/template.yaml"),
    ("AtlassianApiUrl=http://x", "AtlassianApiUrl is set by the sandbox itself"),
    # What CloudFormation refuses and moto lets through (then fails in every message, or not at all)
    ("UninstallGraceHours=abc", "UninstallGraceHours must be a number"),
    ("UninstallGraceHours=", "UninstallGraceHours must be a number"),
    ("UninstallGraceHours=nan", "UninstallGraceHours must be a finite number"),
    ("UninstallGraceHours=1e400", "UninstallGraceHours must be a finite number"),
    ("UninstallGraceHours=-5", "UninstallGraceHours must be at least 0"),
    ("UninstallGraceHours=1e9", "UninstallGraceHours must be at most 720"),
    ("UninstallChunkSize=0", "UninstallChunkSize must be at least 1"),
])
def test_a_bad_parameter_is_refused_with_its_name(text, reason):
    with pytest.raises(ValueError, match=reason):
        parameter_overrides(text)


def test_the_templates_bounds_are_the_ones_the_service_enforces():
    from gdpr_core.lifecycle.uninstall import MAX_CHUNK, MAX_GRACE_HOURS
    from gdpr_sandbox import cfn_yaml, paths

    parameters = cfn_yaml.load(paths.TEMPLATE)["Parameters"]
    assert parameters["UninstallGraceHours"]["MaxValue"] == MAX_GRACE_HOURS
    assert parameters["UninstallChunkSize"]["MaxValue"] == MAX_CHUNK
