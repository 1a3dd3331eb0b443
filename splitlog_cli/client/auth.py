"""`splitlog auth`: sign up, sign in and out, and manage API keys.

Passwords are read from the terminal without echo, or from the first line
of standard input with `--password-stdin`; they are never printed. The
session's tokens are saved for the gateway address (see `credentials`) and
never printed either. The one secret shown is a new API key's, once.
"""

from __future__ import annotations

import argparse
import getpass
import sys
import time

from google.protobuf.timestamp_pb2 import Timestamp

from log_service.timefmt import parse_duration
from splitlog.auth.v1 import auth_service_pb2 as auth_pb2
from splitlog.users.v1 import users_service_pb2 as users_pb2
from splitlog_cli.client import render
from splitlog_cli.client.command import Context, add_action, add_actions
from splitlog_cli.client.connection import ServerError
from splitlog_cli.client.credentials import Session, SessionStore, config_dir
from splitlog_cli.client.users import users_table
from splitlog_cli.client.values import UsageError, invalid, resource_name, timestamp

# Set on the parsers of the actions that must not send the saved credential:
# signing in with a stale token would only add a pointless refresh.
SENDS_CREDENTIAL = "sends_credential"
SCOPES = ("logs:write", "logs:read", "admin")
_KEY_HEADERS = ("NAME", "DISPLAY NAME", "SCOPES", "EXPIRES", "CREATED", "REVOKED")


def add_parsers(
    commands: argparse._SubParsersAction, common: argparse.ArgumentParser
) -> None:
    actions = add_actions(
        commands, "auth", "sign up, sign in and out, and manage API keys"
    )

    signup = add_action(
        actions, "signup", common, sign_up, "create a user with a password and sign in"
    )
    signup.add_argument("--email", required=True, help="email address, unique")
    signup.add_argument(
        "--display-name",
        required=True,
        help="display name, 1 to 100 characters by default",
    )
    signup.add_argument(
        "--user-id",
        help="id of the new user: 4 to 63 lower-case letters, digits and "
        "hyphens, starting with a letter (default: chosen by the server)",
    )
    signup.add_argument(
        "--currency",
        type=str.upper,
        help="ISO 4217 code of the user's default currency, such as EUR, which "
        "the user's new groups take (default: USD)",
    )
    _add_password_option(signup)
    signup.set_defaults(**{SENDS_CREDENTIAL: False})

    signin = add_action(
        actions, "signin", common, sign_in, "sign in and save the session's tokens"
    )
    signin.add_argument("--email", required=True, help="the user's email address")
    _add_password_option(signin)
    signin.set_defaults(**{SENDS_CREDENTIAL: False})

    signout = add_action(
        actions,
        "signout",
        common,
        sign_out,
        "end the saved session and forget its tokens",
    )
    signout.set_defaults(**{SENDS_CREDENTIAL: False})

    keys = add_actions(actions, "keys", "create, list and revoke API keys for programs")
    create = add_action(keys, "create", common, create_key, "create an API key")
    create.add_argument("--name", required=True, help="display name of the key")
    create.add_argument(
        "--scope",
        dest="scopes",
        action="append",
        required=True,
        choices=SCOPES,
        help="what the key may do; repeat for several scopes",
    )
    create.add_argument(
        "--expires-in",
        metavar="DURATION",
        help="lifetime of the key, such as 30d or 12h (default: never expires)",
    )
    _add_user_option(create)

    listing = add_action(keys, "list", common, list_keys, "list API keys")
    _add_user_option(listing)

    revoke = add_action(keys, "revoke", common, revoke_key, "revoke an API key")
    revoke.add_argument(
        "key",
        metavar="NAME",
        help="the key's display name, its id, or users/USER/apiKeys/ID",
    )
    _add_user_option(revoke)


def _add_password_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from the first line of standard input instead "
        "of asking on the terminal",
    )


def _add_user_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--user",
        metavar="USER",
        help="owner of the keys, id or users/ID (default: the signed-in user); "
        "naming another user needs an administrator's credential",
    )


def sign_up(context: Context, args: argparse.Namespace) -> users_pb2.User:
    password = _read_password(args.password_stdin, confirm=True)
    request = auth_pb2.SignUpRequest(
        user=users_pb2.User(
            email=args.email,
            display_name=args.display_name,
            currency_code=args.currency or "",
        ),
        user_id=args.user_id or "",
        password=password,
    )
    response = context.call("auth.SignUp", request)
    path = _save(context, Session.from_tokens(response.user.name, response.tokens))
    _say(
        context,
        f"Signed up and signed in as {response.user.name}; session saved in {path}",
    )
    context.show(response.user, lambda user: users_table([user]))
    return response.user


def sign_in(context: Context, args: argparse.Namespace) -> auth_pb2.SignInResponse:
    password = _read_password(args.password_stdin, confirm=False)
    request = auth_pb2.SignInRequest(email=args.email, password=password)
    response = context.call("auth.SignIn", request)
    path = _save(context, Session.from_tokens(response.user, response.tokens))
    _say(context, f"Signed in as {response.user}; session saved in {path}")
    # The response contains the tokens, so show only the user.
    shown = auth_pb2.SignInResponse(user=response.user)
    context.show(shown, lambda message: message.user)
    return shown


def sign_out(context: Context, args: argparse.Namespace) -> auth_pb2.SignOutResponse:
    store = SessionStore(config_dir())
    session = store.load(context.address)
    if session is None:
        _say(context, f"Not signed in to {context.address}; nothing to do")
        return auth_pb2.SignOutResponse()
    request = auth_pb2.SignOutRequest(refresh_token=session.refresh_token)
    try:
        context.call("auth.SignOut", request)
    except ServerError as exc:
        # A session that ended already (expired or revoked) is removed too.
        # Any other failure keeps it, so that signing out can be retried.
        if exc.code is None or exc.code.name != "UNAUTHENTICATED":
            raise
    store.remove(context.address)
    _say(context, f"Signed out of {context.address}")
    return auth_pb2.SignOutResponse()


def create_key(
    context: Context, args: argparse.Namespace
) -> auth_pb2.CreateApiKeyResponse:
    key = auth_pb2.ApiKey(display_name=args.name, scopes=args.scopes)
    if args.expires_in is not None:
        key.expire_time.CopyFrom(_expiry(args.expires_in))
    request = auth_pb2.CreateApiKeyRequest(parent=_owner(context, args), api_key=key)
    response = context.call("auth.CreateApiKey", request)
    if context.format == "json":
        context.show(response, str)
        return response
    # The table goes to stderr and the secret alone to stdout, so that
    # `KEY=$(splitlog auth keys create ...)` captures just the secret.
    print(
        keys_table([response.api_key])
        + "\n\nSecret (shown only this once; store it now, it cannot be shown "
        "again):",
        file=sys.stderr,
        flush=True,
    )
    print(response.secret, file=context.out, flush=True)
    return response


def list_keys(
    context: Context, args: argparse.Namespace
) -> auth_pb2.ListApiKeysResponse:
    response = auth_pb2.ListApiKeysResponse(api_keys=_all_keys(context, args))
    context.show(response, lambda response: keys_table(response.api_keys))
    return response


def revoke_key(context: Context, args: argparse.Namespace) -> auth_pb2.ApiKey:
    name = _key_name(context, args)
    response = context.call(
        "auth.RevokeApiKey", auth_pb2.RevokeApiKeyRequest(name=name)
    )
    context.show(response.api_key, lambda key: keys_table([key]))
    return response.api_key


def _all_keys(context: Context, args: argparse.Namespace) -> list[auth_pb2.ApiKey]:
    request = auth_pb2.ListApiKeysRequest(parent=_owner(context, args))
    return context.all_pages("auth.ListApiKeys", request, "api_keys")


def _key_name(context: Context, args: argparse.Namespace) -> str:
    """Return the resource name of the key that NAME refers to."""
    if "/" in args.key:
        parts = args.key.split("/")
        if len(parts) != 4 or parts[0] != "users" or parts[2] != "apiKeys":
            raise invalid("NAME", args.key, "write users/USER/apiKeys/ID")
        return args.key
    keys = [key for key in _all_keys(context, args) if not _is_set(key.revoke_time)]
    by_id = [key for key in keys if render.short(key.name) == args.key]
    found = by_id or [key for key in keys if key.display_name == args.key]
    if not found:
        raise invalid(
            "NAME",
            args.key,
            "no active key has that id or display name; list them with "
            "`splitlog auth keys list`",
        )
    if len(found) > 1:
        names = ", ".join(key.name for key in found)
        raise invalid(
            "NAME",
            args.key,
            f"several keys have that display name: {names}; pass the full name of one",
        )
    return found[0].name


def _owner(context: Context, args: argparse.Namespace) -> str:
    if args.user:
        return resource_name(args.user, "users", "--user")
    if context.signed_in_user is None:
        raise UsageError(
            f"no signed-in user for {context.address}: sign in with `splitlog "
            "auth signin --email EMAIL`, or name the owner with --user"
        )
    return context.signed_in_user


def _expiry(text: str) -> Timestamp:
    try:
        nanos = parse_duration(text)
    except ValueError as exc:
        raise invalid("--expires-in", text, str(exc)) from None
    if nanos <= 0:
        raise invalid("--expires-in", text, "give a lifetime above zero, such as 30d")
    return timestamp(
        time.time_ns() + nanos,
        "--expires-in",
        text,
        "the key would expire after the year 9999; give a shorter lifetime, "
        "such as 365d",
    )


def _read_password(from_stdin: bool, confirm: bool) -> str:
    """Read a password without echo, or one line from standard input."""
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        if not sys.stdin.isatty():
            raise UsageError(
                "no terminal to ask for the password on; pipe it to "
                "--password-stdin instead"
            )
        password = getpass.getpass("Password: ")
        if confirm and getpass.getpass("Password again: ") != password:
            raise UsageError("the two passwords differ; run the command again")
    if not password:
        raise UsageError(
            "the password is empty: type it at the prompt, or pipe one line to "
            "--password-stdin"
        )
    return password


def _save(context: Context, session: Session) -> str:
    store = SessionStore(config_dir())
    store.save(context.address, session)
    return str(store.path)


def _say(context: Context, text: str) -> None:
    """Print a status line: to stderr with --format json, so stdout stays JSON."""
    stream = sys.stderr if context.format == "json" else context.out
    print(text, file=stream, flush=True)


def _is_set(stamp: Timestamp) -> bool:
    return bool(stamp.seconds or stamp.nanos)


def keys_table(keys) -> str:
    return render.table(
        _KEY_HEADERS,
        [
            (
                key.name,
                key.display_name,
                ",".join(key.scopes),
                render.timestamp(key.expire_time)
                if _is_set(key.expire_time)
                else "never",
                render.timestamp(key.create_time),
                render.timestamp(key.revoke_time),
            )
            for key in keys
        ],
    )
