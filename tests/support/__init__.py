"""Shared test helpers (not fixtures): build AWS resources from infra/template.yaml, fakes."""
