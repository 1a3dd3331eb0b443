"""Tell a retried CreateGroup from another request under the same request_id.

A CreateGroup stores two hashes beside its `request_id`
(`splitlog_runtime.idempotency.values_hash`), both of its checked values
`group_id`, display name, creator and `currency_code`:

- `request_hash` with `currency_code` as sent, and
- `resolved_hash` with the currency that the group got: the one sent, or
  the creator's default currency for an empty field.

A retry replays when either hash matches. An empty `currency_code` takes the
creator's default currency, so two requests for the same group can differ in
that field: one leaves it empty, the other names the currency that the empty
field gave the group. The first hash lets an exact retry of a call that left
the currency empty replay after the creator has changed their default
currency. The second lets a retry that names the currency (or leaves it
empty while the creator's default is still that currency) replay, however
UpdateGroup has changed the group's currency since. A retry that names any
other currency fails with REQUEST_ID_REUSED.

Keys stored before `resolved_hash` was kept compare with the group's
currency now instead (`_differs_only_in_default_currency`).
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
        """Return the hash of the values as sent."""
        return self.resolved_hash(self.currency_code)

    def resolved_hash(self, currency_code: str) -> str:
        """Return the hash of the values with `currency_code` as the currency,
        such as the one an empty `currency_code` gives the group."""
        return values_hash(
            [self.group_id, self.display_name, self.creator_id, currency_code]
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
    if earlier.resolved_hash is not None:
        currency = create.currency_code
        if not currency:
            creator = storage.get_user(session, create.creator_id)
            currency = creator.currency_code if creator is not None else ""
        if currency and earlier.resolved_hash == create.resolved_hash(currency):
            return
    elif _differs_only_in_default_currency(session, earlier, create):
        return
    check_same_request(earlier.request_hash, request_hash, request_id, "group")


def _differs_only_in_default_currency(
    session: Session, earlier: storage.RequestIdRow, create: GroupCreate
) -> bool:
    """Return whether `create` and the earlier create differ only in that one
    leaves `currency_code` empty and the other names the currency that the
    empty field gives the group, for a key stored without `resolved_hash`.

    NOTE: without that hash, the currency the group got at creation is not
    known, so this compares with the group's currency now. After UpdateGroup
    has changed it, a retry that names the new currency replays and one that
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
