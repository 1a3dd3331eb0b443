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
from pathlib import Path

from splitlog_runtime import auth
from splitlog_runtime.config import Config
from splitlog_runtime.errors import FailedPrecondition, InvalidArgument, NotFound
from splitlog_runtime.resources import check_id

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
    # Imported here so that the other commands load neither the service code
    # nor SQLAlchemy.
    from sqlalchemy import inspect
    from sqlalchemy.exc import SQLAlchemyError

    from splitlog_runtime.database import Database, safe_url
    from user_service.auth_servicer import insert_api_key
    from user_service.domain import validate_display_name
    from user_service.storage import UserRow

    user_id = args.user.removeprefix("users/")
    try:
        check_id(user_id, "USER")
        display_name = validate_display_name(args.name, "--name")
    except InvalidArgument as exc:
        _error(str(exc))
        return EXIT_USAGE
    url = config.database_url("user_service")
    missing = _missing_sqlite_file(url)
    if missing is not None and config.user_service_db_url:
        _error(
            f"no user database at {missing}, the file that --user-service-db-url "
            "(SPLITLOG_USER_SERVICE_DB_URL) names; set it to the database URL "
            "of the running splitlog"
        )
        return EXIT_FAILURE
    if missing is not None:
        _error(
            f"no user database at {missing}, so splitlog has not run with the "
            f"data directory {Path(config.data_dir).resolve()}; pass the data "
            "directory of the running splitlog with --data-dir (or "
            "SPLITLOG_DATA_DIR), or its database URL with --user-service-db-url"
        )
        return EXIT_FAILURE
    database = Database(url)
    shown_url = safe_url(url)
    try:
        if not inspect(database.engine).has_table(UserRow.__tablename__):
            _error(
                f"the database {shown_url} has no {UserRow.__tablename__} table, "
                "so it is not user_service's database, or splitlog has not "
                "started on it yet; start splitlog once, or check "
                "--data-dir and --user-service-db-url"
            )
            return EXIT_FAILURE
        with database.transaction() as session:
            row, secret = insert_api_key(
                session, user_id, display_name, [auth.SCOPE_ADMIN], None
            )
            name = f"users/{row.user_id}/apiKeys/{row.id}"
    except NotFound:
        _error(
            f"user {user_id!r} does not exist in {shown_url}; sign the user up "
            "first, or check --data-dir and --user-service-db-url"
        )
        return EXIT_FAILURE
    except FailedPrecondition:
        _error(
            f"user {user_id!r} is deactivated, and the credentials of a "
            "deactivated user do not work, so an admin key would be useless; "
            "give the key to an active user"
        )
        return EXIT_FAILURE
    except SQLAlchemyError as exc:
        _error(
            f"cannot write to the user database {shown_url}: "
            f"{exc.__class__.__name__}; start splitlog once so that it creates "
            "the database, or check --data-dir and --user-service-db-url"
        )
        return EXIT_FAILURE
    finally:
        database.engine.dispose()
    if args.output == "json":
        print(
            json.dumps({"name": name, "scopes": [auth.SCOPE_ADMIN], "secret": secret})
        )
    else:
        # The secret goes to stdout, often a file, so this line must not read
        # as if the secret followed it on the terminal.
        print(
            f"created {name} with the {auth.SCOPE_ADMIN!r} scope. Its secret is "
            "printed on standard output, only this once.",
            file=sys.stderr,
        )
        print(secret)
    return 0


def _error(message: str) -> None:
    print(f"splitlog admin-key: error: {message}", file=sys.stderr)


def _missing_sqlite_file(url: str) -> Path | None:
    """Return the path of a SQLite database file that does not exist, or None.

    Opening a missing SQLite file would create it, and its folder, empty.
    """
    from sqlalchemy import make_url

    from splitlog_runtime.database import normalise_url

    parsed = make_url(normalise_url(url))
    if parsed.get_backend_name() != "sqlite":
        return None
    if not parsed.database or parsed.database == ":memory:":
        return None
    path = Path(parsed.database)
    return None if path.exists() else path
