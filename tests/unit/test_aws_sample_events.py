"""The copies of AWS's sample events in events/aws/ must stay byte-identical to the shared ones."""

import pytest

from tests.support import aws_events

NAMES = ["scheduled-event.json", "sqs-receive-message.json", "http-api-proxy.json"]


@pytest.mark.parametrize("name", NAMES)
def test_vendored_sample_is_unchanged(name):
    vendored = (aws_events.VENDORED / name).read_bytes()
    assert vendored.startswith(b"{")
    shared = aws_events.SHARED / name
    if not shared.exists():
        pytest.skip("../shared/aws-events is not beside this clone")
    assert vendored == shared.read_bytes()
