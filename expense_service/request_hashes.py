"""Hashes that tell a retried create from another request under the same key.

A create stores, beside its `request_id`, the SHA-256 of the request as the
server reads it. That is the checked values with the server's defaults
applied: CATEGORY_GENERAL for an unset category, the description without
surrounding spaces, lower-case inner request_ids and, with authentication
on, the caller as the creator of a create that leaves it empty. The fields
that a create
ignores (`name`, the output-only fields, `last_modifier`) or does not know
are left out. A retry that spells out a default, or sends back fields of a
response, then hashes the same as the first call.

Creates stored before this rule hashed the request's bytes instead
(`_bytes_hash`). Their keys are still matched by that hash, and by the
hash of the normalized request with the category left unset, which is what
a client that never sets the category stored. A retry that differs from such
a first call in another normalized value, such as a padded description,
still fails with REQUEST_ID_REUSED, because the stored hash cannot tell which
raw values the first call sent.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from google.protobuf.message import Message

from expense_service import domain
from splitlog.expenses.v1 import expenses_service_pb2 as pb


@dataclass(frozen=True)
class RequestHash:
    """The hash a create stores with its key, and the test of a stored one.

    Attributes:
      value: the hash to store, of the normalized request.
      earlier_forms: builds the hashes that the same request got before
        requests were normalized; called only when a stored hash differs
        from `value`.
    """

    value: str
    earlier_forms: Callable[[], Iterable[str]] = field(repr=False, compare=False)

    def matches(self, stored: str | None) -> bool:
        """Return whether a stored hash marks the same request as this one.

        A key stored before hashes were kept (None) matches any request.
        """
        if stored is None or stored == self.value:
            return True
        return stored in set(self.earlier_forms())


def _digest(message: Message) -> str:
    return hashlib.sha256(message.SerializeToString(deterministic=True)).hexdigest()


def _money(amount: domain.Amount):
    return domain.money_message(amount.minor, amount.currency_code)


def _participant(member: domain.SplitMember) -> pb.SplitParticipant:
    participant = member.participant
    message = pb.SplitParticipant(user=participant.user)
    if participant.exact_amount is not None:
        message.exact_amount.CopyFrom(
            domain.money_message(participant.exact_amount, member.exact_currency)
        )
    elif participant.basis_points is not None:
        message.basis_points = participant.basis_points
    elif participant.shares is not None:
        message.shares = participant.shares
    return message


def normalized_create(
    request: pb.CreateExpenseRequest,
    parent: str,
    draft: domain.Draft,
    creator: str,
    request_id: str = "",
) -> pb.CreateExpenseRequest:
    """Build the create as the server stores it, for hashing.

    Args:
      request: the create as sent.
      parent: the group; in a batch, the batch's parent.
      draft: the request's checked fields, with the defaults applied.
      creator: the checked creator, the caller when the request left it empty.
      request_id: the key to keep in the hash: empty for a create sent alone,
        the checked inner key for a create in a batch.
    """
    expense = pb.Expense(
        description=draft.description,
        category=draft.category,
        expense_date=domain.date_message(draft.expense_date),
        total=_money(draft.total),
        payers=[
            pb.Payer(user=payer.user, amount=_money(payer.amount))
            for payer in draft.payers
        ],
        split=pb.Split(
            type=draft.split_type,
            participants=[_participant(member) for member in draft.members],
        ),
        notes=draft.notes,
        creator=creator,
    )
    return pb.CreateExpenseRequest(
        parent=parent,
        expense=expense,
        expense_id=request.expense_id,
        request_id=request_id,
    )


def _without_default_category(
    create: pb.CreateExpenseRequest,
) -> pb.CreateExpenseRequest:
    """Return a copy whose CATEGORY_GENERAL is left unset, as a client that
    never sets the category sends it."""
    copy = pb.CreateExpenseRequest()
    copy.CopyFrom(create)
    if copy.expense.category == pb.CATEGORY_GENERAL:
        copy.expense.category = pb.CATEGORY_UNSPECIFIED
    return copy


def _bytes_hash(request: pb.CreateExpenseRequest, parent: str) -> str:
    """Hash a create the way keys stored before normalization were hashed."""
    copy = pb.CreateExpenseRequest()
    copy.CopyFrom(request)
    copy.request_id = ""
    copy.parent = parent
    return _digest(copy)


def create_hash(
    request: pb.CreateExpenseRequest, parent: str, draft: domain.Draft, creator: str
) -> RequestHash:
    """Hash a create without its request_id, so that a retry hashes the same.

    The parent is filled in, so a create sent alone and the same create in a
    batch (where it may leave the parent empty) hash the same.
    """
    normalized = normalized_create(request, parent, draft, creator)

    def earlier_forms() -> list[str]:
        return [
            _bytes_hash(request, parent),
            _digest(_without_default_category(normalized)),
        ]

    return RequestHash(_digest(normalized), earlier_forms)


def batch_hash(
    request: pb.BatchCreateExpensesRequest,
    normalized: Sequence[pb.CreateExpenseRequest],
) -> RequestHash:
    """Hash a batch without its own request_id.

    Args:
      request: the batch as sent.
      normalized: its creates from `normalized_create`, in order, each with
        the batch's parent and its own checked request_id.
    """
    current = pb.BatchCreateExpensesRequest(parent=request.parent, requests=normalized)

    def earlier_forms() -> list[str]:
        sent = pb.BatchCreateExpensesRequest(parent=request.parent)
        for inner in request.requests:
            added = sent.requests.add()
            added.CopyFrom(inner)
            added.parent = request.parent
        # NOTE: a batch stored before normalization whose creates set the
        # category on some and not on others matches only a retry that sends
        # them the same way, because trying every mix would cost 2^n hashes.
        unset = pb.BatchCreateExpensesRequest(
            parent=request.parent,
            requests=[_without_default_category(inner) for inner in normalized],
        )
        return [_digest(sent), _digest(unset)]

    return RequestHash(_digest(current), earlier_forms)
