"""`splitlog admin-key`: create an administrator's API key on the database.

An `admin` key passes every authorization check, so the gateway creates one
only for a caller that already is an administrator. The first one comes from
an operator who can reach the user database: this command opens it with the
same settings as `splitlog up` and prints the secret once.
"""

from __future__ import annotations

import argparse
import json
import sys

from sqlalchemy.exc import SQLAlchemyError

from splitlog_runtime import auth
from splitlog_runtime.config import Config
from splitlog_runtime.database import Database
from splitlog_runtime.errors import InvalidArgument, NotFound

EXIT_FAILURE = 1
EXIT_USAGE = 2


def add_parser(commands, config_flags: argparse.ArgumentParser) -> None:
    """Add the `admin-key` subcommand to the top-level subparsers."""
    parser = commands.add_parser(
        "admin-key",
        parents=[config_flags],
        help="create an API key with the admin scope for an existing user",
        description="Create an API key with the 'admin' scope for an existing "
        "user, writing it straight into user_service's database (the "
        "user_service_db_url setting, or the SQLite file in the data "
        "directory). The secret is printed once. Run it where the database "
        "is reachable; the services may be running.",
    )
    parser.add_argument("user", help="user id, or users/{user}, of the key's owner")
    parser.add_argument(
        "--name",
        default="admin",
        help="display name of the key (default: admin)",
    )
    parser.add_argument(
        "--output",
        choices=("text", "json"),
        default="text",
        help="print the secret alone (text) or the key's name and secret (json)",
    )


def run(args: argparse.Namespace, config: Config) -> int:
    """Create the key and print it; return the exit status."""
    # Imported here so that the other commands do not load the service code.
    from user_service.auth_servicer import insert_api_key
    from user_service.domain import validate_display_name

    user_id = args.user.removeprefix("users/")
    try:
        display_name = validate_display_name(args.name, "--name")
    except InvalidArgument as exc:
        print(f"splitlog admin-key: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    url = config.database_url("user_service")
    database = Database(url)
    try:
        with database.transaction() as session:
            row, secret = insert_api_key(
                session, user_id, display_name, [auth.SCOPE_ADMIN], None
            )
            name = f"users/{row.user_id}/apiKeys/{row.id}"
    except NotFound:
        print(
            f"splitlog admin-key: error: user {user_id!r} does not exist in "
            f"{database.engine.url.render_as_string(hide_password=True)}; sign "
            "the user up first, or check user_service_db_url and data_dir",
            file=sys.stderr,
        )
        return EXIT_FAILURE
    except SQLAlchemyError as exc:
        print(
            "splitlog admin-key: error: cannot write to the user database "
            f"{database.engine.url.render_as_string(hide_password=True)}: "
            f"{exc.__class__.__name__}; start splitlog once so that it creates "
            "the database, or check user_service_db_url and data_dir",
            file=sys.stderr,
        )
        return EXIT_FAILURE
    finally:
        database.engine.dispose()
    if args.output == "json":
        print(
            json.dumps({"name": name, "scopes": [auth.SCOPE_ADMIN], "secret": secret})
        )
    else:
        print(
            f"created {name} with the {auth.SCOPE_ADMIN!r} scope; its secret, "
            "shown only now:",
            file=sys.stderr,
        )
        print(secret)
    return 0
