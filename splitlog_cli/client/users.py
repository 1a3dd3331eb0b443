"""`splitlog users`: create, show and list users."""

from __future__ import annotations

import argparse
import uuid

from splitlog.users.v1 import users_service_pb2 as users_pb2
from splitlog_cli.client import render
from splitlog_cli.client.command import Context, add_action, add_actions
from splitlog_cli.client.values import resource_name

_USER_HEADERS = ("NAME", "EMAIL", "DISPLAY NAME", "CURRENCY", "STATE")


def add_parsers(
    commands: argparse._SubParsersAction, common: argparse.ArgumentParser
) -> None:
    actions = add_actions(commands, "users", "create, show and list users")

    create = add_action(actions, "create", common, create_user, "create a user")
    create.add_argument("--email", required=True, help="email address, unique")
    create.add_argument(
        "--name", required=True, help="display name, 1 to 100 characters by default"
    )
    create.add_argument(
        "--currency",
        type=str.upper,
        help="ISO 4217 code of the user's default currency (USD)",
    )
    create.add_argument(
        "--id",
        help="id of the new user: 4 to 63 lower-case letters, digits and "
        "hyphens, starting with a letter (default: chosen by the server)",
    )

    get = add_action(actions, "get", common, get_user, "show one user")
    get.add_argument("user", metavar="USER", help="user id or name users/ID")

    add_action(
        actions,
        "list",
        common,
        list_users,
        "list users, oldest first: every user for an administrator or while "
        "the server requires no credential, else only your own account",
    )


def create_user(context: Context, args: argparse.Namespace) -> users_pb2.User:
    request = users_pb2.CreateUserRequest(
        user=users_pb2.User(
            email=args.email,
            display_name=args.name,
            currency_code=args.currency or "",
        ),
        user_id=args.id or "",
        request_id=str(uuid.uuid4()),
    )
    user = context.call("users.CreateUser", request).user
    context.show(user, lambda user: users_table([user]))
    return user


def get_user(context: Context, args: argparse.Namespace) -> users_pb2.User:
    name = resource_name(args.user, "users", "USER")
    user = context.call("users.GetUser", users_pb2.GetUserRequest(name=name)).user
    context.show(user, lambda user: users_table([user]))
    return user


def list_users(
    context: Context, args: argparse.Namespace
) -> users_pb2.ListUsersResponse:
    found = context.all_pages("users.ListUsers", users_pb2.ListUsersRequest(), "users")
    response = users_pb2.ListUsersResponse(users=found)
    context.show(response, lambda response: users_table(response.users))
    return response


def users_table(users) -> str:
    return render.table(
        _USER_HEADERS,
        [
            (
                user.name,
                user.email,
                user.display_name,
                user.currency_code,
                users_pb2.User.State.Name(user.state).removeprefix("STATE_").lower(),
            )
            for user in users
        ],
    )
