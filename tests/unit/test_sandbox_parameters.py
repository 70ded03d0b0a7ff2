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
])
def test_a_bad_parameter_is_refused_with_its_name(text, reason):
    with pytest.raises(ValueError, match=reason):
        parameter_overrides(text)
