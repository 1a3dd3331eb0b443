"""The gateway's own API: views that combine several backends in one call.

`GetGroupOverview` and `GetUserDashboard` load their main resource first.
Once it has loaded, they start every other backend call they need at once,
over the gateway's backend channels, and wait for all of them:

    GetGroupOverview   user_service     GetGroup (main resource),
                                        ListGroupMembers (every page)
                       balance_service  GetGroupBalance, ComputeSettlementPlan
                       expense_service  ListExpenses (newest recorded first)
    GetUserDashboard   user_service     GetUser (main resource),
                                        ListGroups (every page)
                       balance_service  GetUserBalance, ListSettlements
                       expense_service  ListExpenses (across every group)

Failures follow the contract in `gateway_service.proto`:

- When the main resource does not load, the call fails with that backend's
  status: NOT_FOUND stays NOT_FOUND with the backend's details, and an
  unreachable backend becomes UNAVAILABLE with reason BACKEND_UNAVAILABLE
  and the backend's name. The other calls are never made, so a caller
  who may not see the resource causes no section errors or warnings.
- When another call fails, its section is left empty and `section_errors`
  contains the backend's status under the name of the empty field. Because a
  dashboard without balance_service still lists the user's current groups,
  it names the missing part of them `group_summaries.net_amounts`. The
  groups the user has left but still has a balance in come from
  balance_service alone, so they are missing then too. A section fed by
  two backends (`recent_activity`) is left empty when either of them fails,
  so that a partial list never looks complete.

A backend that `BackendPool.unresponsive_error` reports as not responding
(it left the gateway's health checks unanswered) is not called. Its
sections, or the whole view for the main resource, fail at once with
UNAVAILABLE and reason BACKEND_UNAVAILABLE, as forwarded calls to it do.

Every backend call gets the caller's deadline, or `deadline_seconds` when the
caller set none, minus a reserve that grows with the deadline. The reserve
leaves the gateway time to respond with the sections that loaded when a
backend is too slow, also when grpc rounded the caller's deadline up.

The REST front calls the same code in process, through `local_callables()`,
so both fronts return the same results and the same errors.

With `auth_required` on, every backend call carries the caller's signed
principal, so the backends' authorization checks (`splitlog_runtime.authz`)
decide what a view may load. A caller who may not see the group or user gets
the main resource's PERMISSION_DENIED, and the whole view fails with it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from gateway.proxy import STATUS_DETAILS_KEY, UNREACHABLE_LOG_INTERVAL, BackendPool
from gateway.proxy import forwardable as forwardable_metadata
from splitlog.balances.v1 import balances_service_pb2 as balances_pb
from splitlog.expenses.v1 import expenses_service_pb2 as expenses_pb
from splitlog.gateway.v1 import gateway_service_pb2 as pb
from splitlog.users.v1 import users_service_pb2 as users_pb
from splitlog_runtime.channels import downstream_timeout
from splitlog_runtime.errors import (
    DomainError,
    OutOfRange,
    invalid_field,
    status_reason,
)
from splitlog_runtime.failure_log import FailureLogs
from splitlog_runtime.resources import parse_name_ids

_LOGGER = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["GatewayService"].full_name

DEFAULT_RECENT_EXPENSES = 10
MAX_RECENT_EXPENSES = 50
DEFAULT_RECENT_ACTIVITY = 20
MAX_RECENT_ACTIVITY = 100

# Page size used to read every member of a group and every group of a user.
LIST_PAGE_SIZE = 1000

# Backend calls end before the view's deadline, so that the gateway can still
# send the sections that loaded: RESPONSE_RESERVE_SECONDS plus
# RESPONSE_RESERVE_FRACTION of the time left, at most RESPONSE_RESERVE_MAX_SECONDS
# and at most a tenth of the time left. The fraction covers grpc's rounding:
# C core sends a deadline rounded up to about three significant digits, so a
# client's 10 s arrives as up to 10.1 s and its 150 s as up to 151 s (grpcio
# 1.85). The gateway receives the longer deadline while the client keeps its own.
RESPONSE_RESERVE_SECONDS = 0.2
RESPONSE_RESERVE_FRACTION = 0.02
RESPONSE_RESERVE_MAX_SECONDS = 5.0

# Sort order of the backends' lists: most recently recorded first.
_NEWEST_RECORDED_FIRST = "create_time desc"

_USERS = "splitlog.users.v1.UsersService"
_EXPENSES = "splitlog.expenses.v1.ExpensesService"
_BALANCES = "splitlog.balances.v1.BalancesService"


class BackendError(DomainError):
    """A backend call that failed, with the status to pass on to the caller.

    Args:
      status: the backend's status with its details, as the caller gets it.
    """

    def __init__(self, status: status_pb2.Status) -> None:
        super().__init__(status.message)
        self.status = status
        self.code = _code_of(status)

    def to_status(self) -> status_pb2.Status:
        return self.status


_CODE_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}


def _code_of(status: status_pb2.Status) -> grpc.StatusCode:
    return _CODE_BY_NUMBER.get(status.code, grpc.StatusCode.UNKNOWN)


@dataclass(frozen=True)
class _Rpc:
    """One backend method: its path and its typed multicallable."""

    path: str
    multicallable: grpc.aio.UnaryUnaryMultiCallable

    @property
    def method(self) -> str:
        return self.path.rsplit("/", 1)[1]


def _rpc(pool: BackendPool, service: str, method: str, request, response) -> _Rpc:
    path = f"/{service}/{method}"
    channel = pool.backend_by_method[path].channel
    multicallable = channel.unary_unary(
        path,
        request_serializer=request.SerializeToString,
        response_deserializer=response.FromString,
        _registered_method=True,
    )
    return _Rpc(path, multicallable)


class _Backends:
    """The backend methods that the views call, each created once."""

    def __init__(self, pool: BackendPool) -> None:
        self.get_user = _rpc(
            pool, _USERS, "GetUser", users_pb.GetUserRequest, users_pb.GetUserResponse
        )
        self.get_group = _rpc(
            pool,
            _USERS,
            "GetGroup",
            users_pb.GetGroupRequest,
            users_pb.GetGroupResponse,
        )
        self.list_groups = _rpc(
            pool,
            _USERS,
            "ListGroups",
            users_pb.ListGroupsRequest,
            users_pb.ListGroupsResponse,
        )
        self.list_group_members = _rpc(
            pool,
            _USERS,
            "ListGroupMembers",
            users_pb.ListGroupMembersRequest,
            users_pb.ListGroupMembersResponse,
        )
        self.list_expenses = _rpc(
            pool,
            _EXPENSES,
            "ListExpenses",
            expenses_pb.ListExpensesRequest,
            expenses_pb.ListExpensesResponse,
        )
        self.get_group_balance = _rpc(
            pool,
            _BALANCES,
            "GetGroupBalance",
            balances_pb.GetGroupBalanceRequest,
            balances_pb.GetGroupBalanceResponse,
        )
        self.get_user_balance = _rpc(
            pool,
            _BALANCES,
            "GetUserBalance",
            balances_pb.GetUserBalanceRequest,
            balances_pb.GetUserBalanceResponse,
        )
        self.compute_settlement_plan = _rpc(
            pool,
            _BALANCES,
            "ComputeSettlementPlan",
            balances_pb.ComputeSettlementPlanRequest,
            balances_pb.ComputeSettlementPlanResponse,
        )
        self.list_settlements = _rpc(
            pool,
            _BALANCES,
            "ListSettlements",
            balances_pb.ListSettlementsRequest,
            balances_pb.ListSettlementsResponse,
        )


@dataclass
class _Section:
    """The outcome of a best-effort call: its value, or the error to report."""

    value: Any = None
    error: status_pb2.Status | None = None


class _Fetch:
    """The backend calls of one view, sharing its deadline and metadata."""

    def __init__(
        self,
        pool: BackendPool,
        timeout: float,
        metadata: tuple[tuple[str, str | bytes], ...],
        failure_log: FailureLogs,
    ) -> None:
        reserve = min(
            RESPONSE_RESERVE_SECONDS + RESPONSE_RESERVE_FRACTION * timeout,
            RESPONSE_RESERVE_MAX_SECONDS,
            timeout / 10,
        )
        self._end = time.monotonic() + timeout - reserve
        self._pool = pool
        self._metadata = metadata
        self._failure_log = failure_log

    async def one(self, rpc: _Rpc, request: Message) -> Any:
        """Call a backend method once, unless the pool reports its backend as
        not responding.

        Raises:
          BackendError: the call failed; it carries the status for the caller.
        """
        # A stopped backend keeps its connections open, so a call to it would
        # wait for the whole deadline. Forwarded calls make the same check.
        unresponsive = self._pool.unresponsive_error(rpc.path)
        if unresponsive is not None:
            raise BackendError(unresponsive.to_status())
        remaining = max(self._end - time.monotonic(), 0.0)
        try:
            response = await rpc.multicallable(
                request, timeout=remaining, metadata=self._metadata
            )
        except grpc.aio.AioRpcError as error:
            raise BackendError(self._status_of(error, rpc)) from None
        self._pool.call_succeeded(rpc.path)
        return response

    async def every_page(self, rpc: _Rpc, request: Message, field: str) -> list:
        """Call a List method until its last page; return every item of `field`."""
        items: list = []
        request.page_size = LIST_PAGE_SIZE
        while True:
            response = await self.one(rpc, request)
            items.extend(getattr(response, field))
            if not response.next_page_token:
                return items
            request.page_token = response.next_page_token

    async def section(self, name: str, work: Awaitable[Any]) -> _Section:
        """Await a best-effort call; a backend failure becomes the section's error.

        The failure log of the section gets each failure and each success.
        It writes at most one warning per UNREACHABLE_LOG_INTERVAL, even for
        a section that fails for some requests and loads for others, and one
        INFO line when the section loads again after a warning.
        """
        try:
            value = await work
        except BackendError as error:
            status = error.status
            # The pool logs unreachable backends already.
            if status_reason(status) != "BACKEND_UNAVAILABLE":
                self._failure_log.failed(
                    name,
                    "section %s left empty: %s %s",
                    name,
                    _code_of(status).name,
                    status.message,
                )
            return _Section(error=status)
        self._failure_log.succeeded(name)
        return _Section(value=value)

    def _status_of(self, error: grpc.aio.AioRpcError, rpc: _Rpc) -> status_pb2.Status:
        """Return the status that reports a failed backend call to the caller.

        A status with details comes from the backend application, or from the
        pool for an unreachable backend, and passes unchanged. A status
        without details (a deadline, or an error of the backend's gRPC
        runtime) gets an ErrorInfo that names the backend and the method.
        """
        translated = self._pool.translate_error(error, rpc.path)
        code = translated.code
        for key, value in translated.trailing_metadata:
            if key == STATUS_DETAILS_KEY:
                status = status_pb2.Status.FromString(value)
                if status.code == code.value[0]:
                    return status
        backend = self._pool.backend_by_method[rpc.path].name
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            message = (
                f"{backend} did not respond to {rpc.method} before the deadline; "
                "retry with a longer deadline"
            )
            reason = "BACKEND_DEADLINE_EXCEEDED"
        else:
            message = (
                f"{backend} failed {rpc.method} with {code.name}: {translated.details}"
            )
            reason = "BACKEND_ERROR"
        status = DomainError(
            message, reason=reason, metadata={"backend": backend, "method": rpc.method}
        ).to_status()
        status.code = code.value[0]
        return status


def _section_failures() -> FailureLogs:
    """Return the log of failed sections, keyed by section name.

    A section writes at most one warning per UNREACHABLE_LOG_INTERVAL, which
    counts the failures left out, and the first failure of an outage at once
    unless the last warning is less than an interval old. It writes one INFO
    line when it loads again after an outage with a warning.
    """
    return FailureLogs(
        _LOGGER,
        lambda name: f"backend calls of section {name}",
        UNREACHABLE_LOG_INTERVAL,
    )


async def _gather_or_cancel(*work: Awaitable[Any]) -> list[Any]:
    """Run the awaitables concurrently; if one raises, cancel the others."""
    tasks = [asyncio.ensure_future(item) for item in work]
    try:
        return await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        raise


def _parse(name: str, pattern: str, field: str) -> str:
    """Check a resource name such as `groups/{group}`; return it unchanged."""
    parse_name_ids(name, pattern, field)
    return name


def _item_count(value: int, field: str, default: int, maximum: int) -> int:
    """Apply the default to 0 and lower values over the maximum to it, as
    `page_size` is handled elsewhere.

    Raises:
      InvalidArgument: the count is negative.
    """
    if value < 0:
        raise invalid_field(
            field,
            f"{value} is negative; give 0 for the default of {default}, or a "
            f"positive count (counts over {maximum} are lowered to {maximum})",
            reason="INVALID_COUNT",
        )
    return min(value or default, maximum)


def _section_errors(sections: Iterable[tuple[str, _Section]]) -> list[pb.SectionError]:
    return [
        pb.SectionError(section=name, status=section.error)
        for name, section in sections
        if section.error is not None
    ]


def _error_metadata(status: status_pb2.Status) -> dict[str, str]:
    """Return the ErrorInfo metadata of a status, or an empty dict."""
    for packed in status.details:
        info = error_details_pb2.ErrorInfo()
        if packed.Unpack(info):
            return dict(info.metadata)
    return {}


def _total_out_of_range(user: str, status: status_pb2.Status) -> status_pb2.Status:
    """Restate a GetUserBalance failure with reason TOTAL_OUT_OF_RANGE for the
    dashboard, naming the currency and where the net amounts can be read.

    balance_service fails GetUserBalance as a whole when one currency's sum
    across groups has more units than `google.type.Money` holds, so the
    dashboard gets no net amount of the user in any currency.
    """
    currency = _error_metadata(status).get("currency_code", "")
    in_currency = f" in {currency}" if currency else ""
    return OutOfRange(
        f"the net amounts of {user}{in_currency} add up across groups to more "
        "than google.type.Money holds (units up to 2^63 - 1), so balance_service "
        "returned none of the user's net amounts, in any currency; read the "
        "user's net amount in each group with GetGroupOverview (GET "
        f"/v1/groups/{{group}}/overview). balance_service: {status.message}",
        reason="TOTAL_OUT_OF_RANGE",
        metadata={"backend": "balance_service", "currency_code": currency},
    ).to_status()


def _group_of(name: str) -> str:
    """Return `groups/{group}` from the name of a resource inside a group."""
    return "/".join(name.split("/", 2)[:2])


def _group_summaries(
    groups: list[users_pb.Group],
    group_balances: list[balances_pb.UserGroupBalance],
) -> list[pb.GroupSummary]:
    """Pair the user's groups with their net amounts, then add the groups
    that the user has left but still has a net amount in.

    The former groups come from the balances alone, so their summary names
    the group without loading it, because user_service lets only members
    read a group. Listing them makes the totals equal the sum of the lines.
    """
    nets = {entry.group: entry.net_amounts for entry in group_balances}
    summaries = [
        pb.GroupSummary(group=group, net_amounts=nets.pop(group.name, []))
        for group in groups
    ]
    # `group_balances` is ordered by group name.
    summaries += [
        pb.GroupSummary(
            group=users_pb.Group(name=name), net_amounts=amounts, former_member=True
        )
        for name, amounts in nets.items()
    ]
    return summaries


def _recent_activity(
    expenses: list[expenses_pb.Expense],
    settlements: list[balances_pb.Settlement],
    count: int,
) -> list[pb.ActivityItem]:
    """Merge expenses and settlements, most recently recorded first."""
    items = [
        pb.ActivityItem(
            activity_time=expense.create_time,
            group=_group_of(expense.name),
            expense=expense,
        )
        for expense in expenses
    ]
    items += [
        pb.ActivityItem(
            activity_time=settlement.create_time,
            group=_group_of(settlement.name),
            settlement=settlement,
        )
        for settlement in settlements
    ]

    def newest_first(item: pb.ActivityItem) -> tuple[int, int]:
        return (-item.activity_time.seconds, -item.activity_time.nanos)

    # The sort is stable, so items recorded at the same time keep the order
    # in which their backend listed them, expenses before settlements. An
    # import records many expenses at one time.
    items.sort(key=newest_first)
    return items[:count]


class GatewayViews:
    """The GatewayService views, served on the gRPC front and the REST front.

    Args:
      pool: the gateway's backend channels; the views call the backends
        through them.
      default_timeout: seconds a view may take when the caller set no
        deadline.
    """

    def __init__(self, pool: BackendPool, default_timeout: float) -> None:
        self._pool = pool
        self._backends = _Backends(pool)
        self._default_timeout = default_timeout
        self._failure_log = _section_failures()

    async def group_overview(
        self,
        request: pb.GetGroupOverviewRequest,
        timeout: float,
        metadata: tuple[tuple[str, str | bytes], ...] = (),
    ) -> pb.GetGroupOverviewResponse:
        """Load a group with its members, balances, plan and latest expenses.

        Raises:
          InvalidArgument: the group name or the expense count is invalid.
          BackendError: the group could not be loaded.
        """
        group = _parse(request.group, "groups/{group}", "group")
        count = _item_count(
            request.recent_expense_count,
            "recent_expense_count",
            DEFAULT_RECENT_EXPENSES,
            MAX_RECENT_EXPENSES,
        )
        fetch = _Fetch(self._pool, timeout, metadata, self._failure_log)
        backends = self._backends
        balance_name = f"{group}/balance"

        # The group loads first, so a caller who may not see it, or a missing
        # group, costs one backend call and no section errors.
        loaded = await fetch.one(
            backends.get_group, users_pb.GetGroupRequest(name=group)
        )
        members, balance, plan, expenses = await _gather_or_cancel(
            fetch.section(
                "members",
                fetch.every_page(
                    backends.list_group_members,
                    users_pb.ListGroupMembersRequest(parent=group),
                    "members",
                ),
            ),
            fetch.section(
                "balance",
                fetch.one(
                    backends.get_group_balance,
                    balances_pb.GetGroupBalanceRequest(name=balance_name),
                ),
            ),
            fetch.section(
                "settlement_plan",
                fetch.one(
                    backends.compute_settlement_plan,
                    balances_pb.ComputeSettlementPlanRequest(name=balance_name),
                ),
            ),
            fetch.section(
                "recent_expenses",
                fetch.one(
                    backends.list_expenses,
                    # ListExpenses' default order, so that the overview
                    # starts like the group's expense list.
                    expenses_pb.ListExpensesRequest(parent=group, page_size=count),
                ),
            ),
        )

        response = pb.GetGroupOverviewResponse(group=loaded.group)
        if members.value is not None:
            response.members.extend(members.value)
        if balance.value is not None:
            response.balance.CopyFrom(balance.value.balance)
        if plan.value is not None:
            response.settlement_plan.extend(plan.value.transfers)
        if expenses.value is not None:
            response.recent_expenses.extend(expenses.value.expenses[:count])
        response.section_errors.extend(
            _section_errors(
                [
                    ("members", members),
                    ("balance", balance),
                    ("settlement_plan", plan),
                    ("recent_expenses", expenses),
                ]
            )
        )
        return response

    async def user_dashboard(
        self,
        request: pb.GetUserDashboardRequest,
        timeout: float,
        metadata: tuple[tuple[str, str | bytes], ...] = (),
    ) -> pb.GetUserDashboardResponse:
        """Load a user with their groups, net amounts and latest activity.

        Raises:
          InvalidArgument: the user name or the activity count is invalid.
          BackendError: the user could not be loaded.
        """
        user = _parse(request.user, "users/{user}", "user")
        count = _item_count(
            request.recent_activity_count,
            "recent_activity_count",
            DEFAULT_RECENT_ACTIVITY,
            MAX_RECENT_ACTIVITY,
        )
        fetch = _Fetch(self._pool, timeout, metadata, self._failure_log)
        backends = self._backends

        # The user loads first, for the same reason as the group of
        # `group_overview`.
        loaded = await fetch.one(backends.get_user, users_pb.GetUserRequest(name=user))
        groups, balance, expenses, settlements = await _gather_or_cancel(
            fetch.section(
                "group_summaries",
                fetch.every_page(
                    backends.list_groups,
                    users_pb.ListGroupsRequest(member=user),
                    "groups",
                ),
            ),
            fetch.section(
                "total_net_amounts",
                fetch.one(
                    backends.get_user_balance,
                    balances_pb.GetUserBalanceRequest(name=f"{user}/balance"),
                ),
            ),
            fetch.section(
                "recent_activity",
                fetch.one(
                    backends.list_expenses,
                    expenses_pb.ListExpensesRequest(
                        parent="groups/-",
                        participant=user,
                        page_size=count,
                        order_by=_NEWEST_RECORDED_FIRST,
                    ),
                ),
            ),
            fetch.section(
                "recent_activity",
                fetch.one(
                    backends.list_settlements,
                    balances_pb.ListSettlementsRequest(
                        parent="groups/-",
                        participant=user,
                        page_size=count,
                        order_by=_NEWEST_RECORDED_FIRST,
                    ),
                ),
            ),
        )

        # NOTE: each group's net amount and the other currencies' totals are
        # in range, but GetUserBalance returns none of them once one total
        # is out of range, so the dashboard shows none either.
        if balance.error is not None and (
            status_reason(balance.error) == "TOTAL_OUT_OF_RANGE"
        ):
            balance = _Section(error=_total_out_of_range(user, balance.error))
        response = pb.GetUserDashboardResponse(user=loaded.user)
        if groups.value is not None:
            group_balances = []
            if balance.value is not None:
                group_balances = list(balance.value.balance.group_balances)
            response.group_summaries.extend(
                _group_summaries(groups.value, group_balances)
            )
        if balance.value is not None:
            response.total_net_amounts.extend(balance.value.balance.total_net_amounts)
        if expenses.value is not None and settlements.value is not None:
            response.recent_activity.extend(
                _recent_activity(
                    list(expenses.value.expenses),
                    list(settlements.value.settlements),
                    count,
                )
            )
        sections = [("group_summaries", groups)]
        if groups.value is not None:
            sections.append(("group_summaries.net_amounts", balance))
        sections += [
            ("total_net_amounts", balance),
            ("recent_activity", expenses),
            ("recent_activity", settlements),
        ]
        response.section_errors.extend(_section_errors(sections))
        return response

    def method_handlers(self) -> dict[str, grpc.RpcMethodHandler]:
        """Return the gRPC handler of each GatewayService method, by method name.

        Errors propagate as exceptions; wrap the handlers in the error
        interceptor to turn them into statuses.
        """
        return {
            "GetGroupOverview": grpc.unary_unary_rpc_method_handler(
                self._grpc_method(self.group_overview),
                request_deserializer=pb.GetGroupOverviewRequest.FromString,
                response_serializer=pb.GetGroupOverviewResponse.SerializeToString,
            ),
            "GetUserDashboard": grpc.unary_unary_rpc_method_handler(
                self._grpc_method(self.user_dashboard),
                request_deserializer=pb.GetUserDashboardRequest.FromString,
                response_serializer=pb.GetUserDashboardResponse.SerializeToString,
            ),
        }

    def _grpc_method(self, view: Callable[..., Awaitable[Message]]):
        async def serve(request: Message, context: grpc.aio.ServicerContext):
            return await view(
                request,
                downstream_timeout(context, self._default_timeout),
                forwardable_metadata(context.invocation_metadata()),
            )

        return serve

    def local_callables(self) -> dict[str, Callable[..., Awaitable[bytes]]]:
        """Return in-process callables that the REST front uses as multicallables.

        Each takes the serialized request, a timeout and metadata, and returns
        the serialized response. A failure raises `grpc.aio.AioRpcError` with
        the status and details that the gRPC front would send, so the REST
        front renders it as for any backend.
        """
        return {
            f"/{SERVICE_NAME}/GetGroupOverview": _LocalCall(
                self.group_overview,
                pb.GetGroupOverviewRequest,
                self._default_timeout,
            ),
            f"/{SERVICE_NAME}/GetUserDashboard": _LocalCall(
                self.user_dashboard,
                pb.GetUserDashboardRequest,
                self._default_timeout,
            ),
        }


class _LocalCall:
    """A view called in process with the signature of a raw-bytes multicallable."""

    def __init__(
        self,
        view: Callable[..., Awaitable[Message]],
        request_class: type[Message],
        default_timeout: float,
    ) -> None:
        self._view = view
        self._request_class = request_class
        self._default_timeout = default_timeout

    async def __call__(
        self,
        request: bytes,
        timeout: float | None = None,
        metadata: tuple[tuple[str, str | bytes], ...] = (),
    ) -> bytes:
        message = self._request_class.FromString(request)
        if timeout is None:
            timeout = self._default_timeout
        try:
            response = await self._view(message, timeout, metadata or ())
        except DomainError as error:
            status = rpc_status.to_status(error.to_status())
            raise grpc.aio.AioRpcError(
                status.code,
                grpc.aio.Metadata(),
                grpc.aio.Metadata(*status.trailing_metadata),
                status.details,
            ) from None
        return response.SerializeToString()
