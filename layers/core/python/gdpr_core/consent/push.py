"""One queued capture to ConsentHub: the rules ConsentPushFunction applies to each SQS message.

- A capture older than an erasure recorded for the person is not sent (it would bring back data the
  person asked to drop); it is recorded `superseded` without its payload.
- A capture already accepted is not sent again (SQS delivers at least once).
- 202 → `accepted`. A 4xx other than 429 → `rejected`: the item fails with that reason and its
  redeliveries fail at once, without posting, until SQS moves it to the DLQ. 429, 5xx, timeouts →
  the item fails and SQS retries it with back-off; the last receive counts as given up.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..ids import InvalidAccountId, validate_account_id
from ..pseudonym import Pseudonymizer
from . import hub
from .capture import PushRequest
from .store import PENDING, PUSH_ACCEPTED, PUSH_REJECTED, PUSH_SUPERSEDED, ConsentStore

ALREADY_ACCEPTED = "already_accepted"
BASE_BACKOFF_SECONDS = 30
MAX_BACKOFF_SECONDS = 900


class PushFailed(Exception):
    """Fails the SQS item. `reason` is a fixed word or `http_<status>`; `final` means no retry follows
    (rejected, or the last receive before the DLQ); `delay` is the back-off for the next receive."""

    def __init__(self, reason: str, *, permanent: bool, final: bool, delay: int | None = None):
        super().__init__(("rejected: " if permanent else "retrying: ") + reason)
        self.reason = reason
        self.permanent = permanent
        self.final = final
        self.delay = delay


def backoff_seconds(receive_count: int, retry_after: int | None = None) -> int:
    """30 s, 60 s, 120 s … capped at 15 min, never sooner than ConsentHub's Retry-After."""
    delay = min(MAX_BACKOFF_SECONDS, BASE_BACKOFF_SECONDS * 2 ** max(0, receive_count - 1))
    return max(delay, retry_after or 0)


def account_ref(pseudonymizer: Pseudonymizer, provider_id: str | None) -> str | None:
    """The keyed hash linking a capture to an Atlassian account, when providerId is an account id."""
    if not provider_id:
        return None
    try:
        validate_account_id(provider_id)
    except InvalidAccountId:
        return None  # a site-specific id that is not an Atlassian account: nothing to link
    return pseudonymizer.account(provider_id)


@dataclass
class PushProcessor:
    store: ConsentStore
    pseudonymizer: Pseudonymizer
    client: Callable[[], hub.ConsentHubClient]  # built lazily: skipped pushes need no credentials
    max_receives: int = 5

    def process(self, request: PushRequest, message_id: str, receive_count: int) -> str:
        if self.store.erased_after(request.email, request.version):
            self.store.finish_push(request, PUSH_SUPERSEDED, message_id)
            return PUSH_SUPERSEDED
        settled = self.store.begin_push(request, message_id, account_ref(self.pseudonymizer, request.provider_id))
        if settled is not None:
            if settled.get("outcome") == PUSH_ACCEPTED:
                return ALREADY_ACCEPTED
            raise PushFailed(f"http_{settled.get('lastStatus', 'unknown')}", permanent=True, final=False)
        try:
            self.client().push(request.email, request.locale, request.consents, request.form_url,
                               request.provider_id)
        except hub.PushRejected as error:
            self.store.finish_push(request, PUSH_REJECTED, message_id, error.status)
            raise PushFailed(error.reason, permanent=True, final=True) from None
        except hub.PushUnavailable as error:
            self.store.finish_push(request, PENDING, message_id, error.status or error.reason)
            raise PushFailed(error.reason, permanent=False, final=receive_count >= self.max_receives,
                             delay=backoff_seconds(receive_count, error.retry_after)) from None
        self.store.finish_push(request, PUSH_ACCEPTED, message_id, 202)
        return PUSH_ACCEPTED
