"""Tell a retried CreateGroup from another request under the same request_id.

A CreateGroup stores, beside its `request_id`, the hash of its checked
values (`splitlog_runtime.idempotency.values_hash`): `group_id`, display
name, creator and `currency_code`, each as sent. An empty `currency_code`
takes the creator's default currency, so two requests for the same group can
differ in that field. A retry whose hash differs from the stored one
therefore still replays in two cases:

- The first call left `currency_code` empty, and the retry names the
  group's currency.
- The first call named the group's currency, the retry leaves
  `currency_code` empty, and the creator's default currency is that
  currency now.

Storing the hash of the filled-in currency instead would break an exact
retry of a call that left the currency empty, once the creator has changed
their default currency. Keys stored before this rule hold the same hash, so
they match in the same way.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from sqlalchemy.orm import Session

from splitlog_runtime.idempotency import check_same_request, values_hash
from user_service import domain, storage


@dataclass(frozen=True)
class GroupCreate:
    """The checked values of a CreateGroup that its request hash covers.

    Attributes:
      group_id: as sent; empty for an id that the server generates.
      display_name: the checked display name.
      creator_id: the creator's user id.
      currency_code: as sent; empty for the creator's default currency.
    """

    group_id: str
    display_name: str
    creator_id: str
    currency_code: str

    def request_hash(self) -> str:
        return values_hash(
            [self.group_id, self.display_name, self.creator_id, self.currency_code]
        )


def check_same_group_create(
    session: Session,
    earlier: storage.RequestIdRow,
    create: GroupCreate,
    request_id: str,
) -> None:
    """Reject a request_id that an earlier CreateGroup with other values used.

    Raises:
      InvalidArgument: with reason REQUEST_ID_REUSED.
    """
    request_hash = create.request_hash()
    if earlier.request_hash in (None, request_hash):
        return
    if _differs_only_in_default_currency(session, earlier, create):
        return
    check_same_request(earlier.request_hash, request_hash, request_id, "group")


def _differs_only_in_default_currency(
    session: Session, earlier: storage.RequestIdRow, create: GroupCreate
) -> bool:
    """Return whether `create` and the earlier create differ only in that one
    leaves `currency_code` empty and the other names the currency that the
    empty field gives the group.

    NOTE: this compares with the group's currency now. After UpdateGroup has
    changed it, a retry that names the new currency replays and one that
    names the currency the group got at creation fails. A deleted group has
    no currency left, so such a retry fails with REQUEST_ID_REUSED.
    """
    group_id = domain.parse_group_name(earlier.resource_name, "request_id")
    group = session.get(storage.GroupRow, group_id)
    if group is None:
        return False
    if create.currency_code:
        first = dataclasses.replace(create, currency_code="")
        return (
            create.currency_code == group.currency_code
            and earlier.request_hash == first.request_hash()
        )
    first = dataclasses.replace(create, currency_code=group.currency_code)
    if earlier.request_hash != first.request_hash():
        return False
    creator = storage.get_user(session, create.creator_id)
    return creator is not None and creator.currency_code == group.currency_code
