"""`splitlog groups`: create, show, list and delete groups, and manage members."""

from __future__ import annotations

import argparse
import uuid

from splitlog.users.v1 import users_service_pb2 as users_pb2
from splitlog_cli.client import render
from splitlog_cli.client.command import Context, add_action, add_actions
from splitlog_cli.client.credentials import TOKEN_ENV
from splitlog_cli.client.values import UsageError, resource_name

_GROUP_HEADERS = ("NAME", "DISPLAY NAME", "CURRENCY", "MEMBERS", "CREATOR")
_MEMBER_HEADERS = ("USER", "DISPLAY NAME", "JOINED")


def add_parsers(
    commands: argparse._SubParsersAction, common: argparse.ArgumentParser
) -> None:
    actions = add_actions(commands, "groups", "create and manage groups and members")

    create = add_action(
        actions, "create", common, create_group, "create a group with its creator"
    )
    create.add_argument(
        "--name", required=True, help="display name, 1 to 100 characters by default"
    )
    create.add_argument(
        "--creator",
        metavar="USER",
        help="the first member (default: the signed-in user, that is the user of "
        "the access token in --token or SPLITLOG_TOKEN or of the saved session; "
        "with an API key, the key's owner, whom the server fills in)",
    )
    create.add_argument(
        "--currency",
        type=str.upper,
        help="ISO 4217 code proposed for new expenses (default: the creator's)",
    )
    create.add_argument(
        "--id",
        help="id of the new group, with the rules of a user id (default: chosen "
        "by the server)",
    )

    get = add_action(actions, "get", common, get_group, "show one group")
    _add_group_argument(get)

    listing = add_action(
        actions, "list", common, list_groups, "list the groups of a user"
    )
    listing.add_argument(
        "--member",
        metavar="USER",
        help="user id or name users/ID whose groups to list (default: the "
        "signed-in user, that is the user of the saved session or of the "
        "access token in --token or SPLITLOG_TOKEN)",
    )

    for action, handler, help_text in (
        ("add-member", add_member, "add a user to a group"),
        ("remove-member", remove_member, "remove a member with a zero balance"),
    ):
        parser = add_action(actions, action, common, handler, help_text)
        _add_group_argument(parser)
        parser.add_argument("user", metavar="USER", help="user id or name users/ID")

    members = add_action(
        actions, "members", common, list_members, "list the members of a group"
    )
    _add_group_argument(members)

    delete = add_action(
        actions, "delete", common, delete_group, "delete a settled group"
    )
    _add_group_argument(delete)


def _add_group_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("group", metavar="GROUP", help="group id or name groups/ID")


def group_name(args: argparse.Namespace) -> str:
    return resource_name(args.group, "groups", "GROUP")


def create_group(context: Context, args: argparse.Namespace) -> users_pb2.Group:
    request = users_pb2.CreateGroupRequest(
        group=users_pb2.Group(
            display_name=args.name,
            creator=_creator(context, args),
            currency_code=args.currency or "",
        ),
        group_id=args.id or "",
        request_id=str(uuid.uuid4()),
    )
    group = context.call("users.CreateGroup", request).group
    context.show(group, lambda group: _groups_table([group]))
    return group


def _creator(context: Context, args: argparse.Namespace) -> str:
    """Return the creator of `groups create`: `--creator`, else the caller.

    Raises:
      UsageError: there is no `--creator` and no credential to take it from.
    """
    if args.creator is not None:
        return resource_name(args.creator, "users", "--creator")
    if context.default_recorder is not None:
        return context.default_recorder
    raise UsageError(
        f"--creator is missing, and no user is signed in to {context.address}; "
        "give --creator USER, or sign in with `splitlog auth signin --email "
        "EMAIL` to create the group as yourself"
    )


def get_group(context: Context, args: argparse.Namespace) -> users_pb2.Group:
    request = users_pb2.GetGroupRequest(name=group_name(args))
    group = context.call("users.GetGroup", request).group
    context.show(group, lambda group: _groups_table([group]))
    return group


def list_groups(
    context: Context, args: argparse.Namespace
) -> users_pb2.ListGroupsResponse:
    request = users_pb2.ListGroupsRequest(member=_listed_member(context, args))
    found = context.all_pages("users.ListGroups", request, "groups")
    response = users_pb2.ListGroupsResponse(groups=found)
    context.show(response, lambda response: _groups_table(response.groups))
    return response


def _listed_member(context: Context, args: argparse.Namespace) -> str:
    """Return the user of `groups list`: `--member`, else the signed-in user.

    Raises:
      UsageError: there is no `--member` and the credential names no user.
    """
    if args.member is not None:
        return resource_name(args.member, "users", "--member")
    if context.signed_in_user is not None:
        return context.signed_in_user
    if context.credential is not None and context.credential.present:
        raise UsageError(
            f"--member is missing, and the token of --token or {TOKEN_ENV} "
            "names no user (an API key never does); give --member USER"
        )
    raise UsageError(
        f"--member is missing, and no user is signed in to {context.address}; "
        "give --member USER, or sign in with `splitlog auth signin --email "
        "EMAIL` to list your own groups"
    )


def add_member(context: Context, args: argparse.Namespace) -> users_pb2.Member:
    request = users_pb2.AddGroupMemberRequest(
        parent=group_name(args), user=resource_name(args.user, "users", "USER")
    )
    member = context.call("users.AddGroupMember", request).member
    context.show(member, lambda member: _members_table([member]))
    return member


def remove_member(
    context: Context, args: argparse.Namespace
) -> users_pb2.RemoveGroupMemberResponse:
    user = resource_name(args.user, "users", "USER")
    name = f"{group_name(args)}/members/{render.short(user)}"
    request = users_pb2.RemoveGroupMemberRequest(name=name)
    response = context.call("users.RemoveGroupMember", request)
    context.show(response, lambda _: f"removed {user} from {group_name(args)}")
    return response


def list_members(
    context: Context, args: argparse.Namespace
) -> users_pb2.ListGroupMembersResponse:
    request = users_pb2.ListGroupMembersRequest(parent=group_name(args))
    found = context.all_pages("users.ListGroupMembers", request, "members")
    response = users_pb2.ListGroupMembersResponse(members=found)
    context.show(response, lambda response: _members_table(response.members))
    return response


def delete_group(
    context: Context, args: argparse.Namespace
) -> users_pb2.DeleteGroupResponse:
    request = users_pb2.DeleteGroupRequest(name=group_name(args))
    response = context.call("users.DeleteGroup", request)
    context.show(response, lambda _: f"deleted {request.name}")
    return response


def _groups_table(groups) -> str:
    return render.table(
        _GROUP_HEADERS,
        [
            (
                group.name,
                group.display_name,
                group.currency_code,
                group.member_count,
                render.short(group.creator),
            )
            for group in groups
        ],
    )


def _members_table(members) -> str:
    return render.table(
        _MEMBER_HEADERS,
        [
            (
                render.short(member.user),
                member.display_name,
                render.timestamp(member.join_time),
            )
            for member in members
        ],
    )
