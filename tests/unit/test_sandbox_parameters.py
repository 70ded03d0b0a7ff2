"""GDPR_SANDBOX_PARAMETERS: template parameters for the sandbox's stack, checked against the template."""

from __future__ import annotations

import re

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
    ("UninstallGraceHours=nan", "UninstallGraceHours must be a number"),
    ("UninstallGraceHours=1e400", "UninstallGraceHours must be a finite number"),
    ("UninstallGraceHours=-5", "UninstallGraceHours must be at least 0"),
    ("UninstallGraceHours=1e9", "UninstallGraceHours must be at most 720"),
    ("UninstallGraceHours=1_0", "UninstallGraceHours must be a number"),
    ("UninstallGraceHours=\u0665", "UninstallGraceHours must be a number"),  # an Arabic-Indic 5
    ("UninstallChunkSize=0", "UninstallChunkSize must be a whole number from 1 to 1000"),
    ("UninstallChunkSize=1.5", "UninstallChunkSize must be a whole number from 1 to 1000"),
    ("UninstallChunkSize=1001", "UninstallChunkSize must be a whole number from 1 to 1000"),
    ("DefaultCycleDays=1.5", "DefaultCycleDays must be a whole number of days from 1 to 9999"),
    ("DefaultCycleDays=0", "DefaultCycleDays must be a whole number of days from 1 to 9999"),
    ("UninstallChunkSize=0200", "UninstallChunkSize must be a whole number from 1 to 1000"),
])
def test_a_bad_parameter_is_refused_with_its_name(text, reason):
    with pytest.raises(ValueError, match=reason):
        parameter_overrides(text)


def test_the_templates_bounds_are_the_ones_the_service_enforces():
    from gdpr_core.lifecycle.uninstall import DEFAULT_CHUNK, MAX_CHUNK, MAX_GRACE_HOURS
    from gdpr_sandbox import cfn_yaml, paths

    parameters = cfn_yaml.load(paths.TEMPLATE)["Parameters"]
    assert parameters["UninstallGraceHours"]["MaxValue"] == MAX_GRACE_HOURS
    chunk = parameters["UninstallChunkSize"]
    assert [bool(re.fullmatch(chunk["AllowedPattern"], str(n))) for n in (0, 1, MAX_CHUNK, MAX_CHUNK + 1)] == [
        False, True, True, False]
    assert int(chunk["Default"]) == DEFAULT_CHUNK


def test_numbers_the_template_takes_are_taken():
    assert parameter_overrides("UninstallGraceHours=0.5 UninstallChunkSize=1000") == {
        "UninstallGraceHours": "0.5", "UninstallChunkSize": "1000"}
    assert parameter_overrides("UninstallGraceHours=7.2e2")["UninstallGraceHours"] == "7.2e2"
