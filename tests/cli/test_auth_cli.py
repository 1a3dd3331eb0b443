"""`splitlog auth` and the credential of every client command, with auth on.

A real user_service runs behind a real gateway with `auth_required`; the
commands run in this process through `splitlog_cli.main.main`, with their
own `XDG_CONFIG_HOME` under tmp_path.
"""

from __future__ import annotations

import io
import json
import logging
import stat
from dataclasses import dataclass

import grpc
import pytest

from gateway.app import build
from splitlog.users.v1 import users_service_pb2 as users_pb2
from splitlog.users.v1 import users_service_pb2_grpc as users_grpc
from splitlog_cli.client.connection import open_channel
from splitlog_cli.client.credentials import (
    SESSIONS_FILE,
    TOKEN_ENV,
    Credential,
    Session,
    SessionStore,
)
from splitlog_cli.main import main
from splitlog_runtime import auth
from splitlog_runtime import config as config_module
from tests.auth.support import operator_admin_key
from tests.gateway.support import LoopThread
from tests.ports import closed_address
from user_service import app as user_app

SECRET = "cli-test-secret-" + "y" * 40
PASSWORD = "a long enough passphrase"


class _AllowGuard:
    def check_settled(self, *args, **kwargs) -> None:
        return None

    def close(self) -> None:
        return None


@dataclass
class Output:
    status: int
    stdout: str
    stderr: str


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("auth-cli") / "data"


@pytest.fixture(scope="module")
def gateway_address(data_dir):
    """The gRPC address of a gateway with auth on, before a real user_service."""
    loop_thread = LoopThread()
    config = config_module.load(
        environ={},
        overrides={
            "data_dir": data_dir,
            "auth_required": True,
            "auth_secret": SECRET,
            "grace_seconds": 0.5,
            "workers": 4,
            "expense_service_addr": closed_address(),
            "balance_service_addr": closed_address(),
            "log_service_addr": closed_address(),
            # A reused refresh token signs its session out at once.
            "auth_refresh_reuse_grace_seconds": 0.0,
        },
    )
    users = user_app.build(config, "127.0.0.1:0", guard=_AllowGuard())
    config = config.replace(user_service_addr=f"127.0.0.1:{users.port}")
    gateway = loop_thread.run(build(config, "127.0.0.1:0", "127.0.0.1:0"))
    try:
        yield f"127.0.0.1:{gateway.grpc_port}"
    finally:
        loop_thread.run(gateway.stop(0))
        users.stop(0)
        auth.install_process_signer(None)
        loop_thread.close()


@pytest.fixture
def cli(gateway_address, tmp_path, monkeypatch, capsys):
    """Run `splitlog ARGS --gateway ADDRESS`, with `stdin` as standard input."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv(TOKEN_ENV, raising=False)

    def run(*args: str, stdin: str = "") -> Output:
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
        status = main([*args, "--gateway", gateway_address])
        captured = capsys.readouterr()
        return Output(status, captured.out, captured.err)

    return run


_COUNTER = iter(range(10_000))


def _sign_up(cli) -> tuple[str, str]:
    """Sign up a new user and return its id and email."""
    number = next(_COUNTER)
    user_id, email = f"cli-user-{number}", f"cli{number}@example.com"
    result = cli(
        "auth", "signup", "--email", email, "--display-name", "Ana",
        "--user-id", user_id, "--password-stdin",
        stdin=PASSWORD + "\n",
    )  # fmt: skip
    assert result.status == 0, result.stderr
    assert f"users/{user_id}" in result.stdout
    return user_id, email


def _sessions_file(tmp_path):
    return tmp_path / "config" / "splitlog" / SESSIONS_FILE


def _saved(tmp_path, gateway_address) -> dict:
    data = json.loads(_sessions_file(tmp_path).read_text())
    return data["sessions"][gateway_address]


def test_signup_saves_and_sends_session(cli, tmp_path, gateway_address):
    user_id, _ = _sign_up(cli)

    path = _sessions_file(tmp_path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert _saved(tmp_path, gateway_address)["user"] == f"users/{user_id}"

    shown = cli("users", "get", user_id)
    assert shown.status == 0, shown.stderr
    assert f"users/{user_id}" in shown.stdout


def test_signup_currency_becomes_group_default(cli):
    signed_up = cli(
        "auth", "signup", "--email", "euro@example.com", "--display-name", "Eva",
        "--user-id", "eva-euro", "--currency", "EUR", "--password-stdin",
        "--format", "json",
        stdin=PASSWORD + "\n",
    )  # fmt: skip
    created = cli(
        "groups", "create", "--name", "Porto", "--creator", "eva-euro",
        "--format", "json",
    )  # fmt: skip

    assert signed_up.status == 0, signed_up.stderr
    assert json.loads(signed_up.stdout)["currencyCode"] == "EUR"
    assert created.status == 0, created.stderr
    assert json.loads(created.stdout)["currencyCode"] == "EUR"


def test_signup_table_shows_currency_and_state(cli):
    signed_up = cli(
        "auth", "signup", "--email", "table@example.com", "--display-name", "Tia",
        "--user-id", "tia-table", "--currency", "JPY", "--password-stdin",
        stdin=PASSWORD + "\n",
    )  # fmt: skip

    assert signed_up.status == 0, signed_up.stderr
    lines = signed_up.stdout.splitlines()
    header = next(line for line in lines if line.startswith("NAME"))
    row = next(line for line in lines if line.startswith("users/tia-table"))
    assert header.split() == ["NAME", "EMAIL", "DISPLAY", "NAME", "CURRENCY", "STATE"]
    assert row.split()[-2:] == ["JPY", "active"]


def test_signup_invalid_currency_rejected(cli, tmp_path):
    result = cli(
        "auth", "signup", "--email", "lower@example.com", "--display-name", "Lo",
        "--currency", "zzz", "--password-stdin",
        stdin=PASSWORD + "\n",
    )  # fmt: skip

    assert result.status == 1
    assert "INVALID_ARGUMENT" in result.stderr
    assert "user.currency_code" in result.stderr
    assert "'ZZZ'" in result.stderr
    assert not _sessions_file(tmp_path).exists()


def test_command_without_credential(cli):
    result = cli("users", "list")

    assert result.status == 1
    assert "UNAUTHENTICATED" in result.stderr
    assert "splitlog auth signin --email EMAIL" in result.stderr


def test_signin_then_signout_ends_the_session(cli, tmp_path, gateway_address):
    user_id, email = _sign_up(cli)
    _sessions_file(tmp_path).unlink()

    signed_in = cli("auth", "signin", "--email", email, "--password-stdin",
                    stdin=PASSWORD + "\n")  # fmt: skip
    assert signed_in.status == 0, signed_in.stderr
    assert cli("users", "get", user_id).status == 0
    refresh_token = _saved(tmp_path, gateway_address)["refresh_token"]

    signed_out = cli("auth", "signout")
    assert signed_out.status == 0, signed_out.stderr
    assert "Signed out" in signed_out.stdout
    assert (
        gateway_address
        not in json.loads(_sessions_file(tmp_path).read_text())["sessions"]
    )

    refused = cli("users", "get", user_id)
    assert refused.status == 1
    assert "not signed in" in refused.stderr
    # The server ended the session too: its refresh token no longer works.
    reused = cli("users", "get", user_id, "--token", refresh_token)
    assert reused.status == 1
    assert "UNAUTHENTICATED" in reused.stderr


def test_signin_wrong_password_saves_nothing(cli, tmp_path):
    _, email = _sign_up(cli)
    _sessions_file(tmp_path).unlink()

    result = cli("auth", "signin", "--email", email, "--password-stdin",
                 stdin="not the passphrase\n")  # fmt: skip

    assert result.status == 1
    assert "UNAUTHENTICATED" in result.stderr
    assert not _sessions_file(tmp_path).exists()


def test_empty_password_usage_error(cli):
    result = cli("auth", "signin", "--email", "x@example.com", "--password-stdin")

    assert result.status == 2
    assert "password is empty" in result.stderr


def test_expired_token_refreshed_once(cli, tmp_path, gateway_address):
    user_id, _ = _sign_up(cli)
    path = _sessions_file(tmp_path)
    data = json.loads(path.read_text())
    old = dict(data["sessions"][gateway_address])
    data["sessions"][gateway_address]["access_expire_time"] = 0.0
    path.write_text(json.dumps(data))

    result = cli("users", "get", user_id)

    assert result.status == 0, result.stderr
    renewed = _saved(tmp_path, gateway_address)
    assert renewed["access_token"] != old["access_token"]
    assert renewed["refresh_token"] != old["refresh_token"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_rejected_token_refreshed_and_retried(cli, tmp_path, gateway_address):
    user_id, _ = _sign_up(cli)
    path = _sessions_file(tmp_path)
    data = json.loads(path.read_text())
    data["sessions"][gateway_address]["access_token"] = "not-a-token"
    path.write_text(json.dumps(data))

    result = cli("users", "get", user_id)

    assert result.status == 0, result.stderr
    assert _saved(tmp_path, gateway_address)["access_token"] != "not-a-token"


def test_stale_run_adopts_saved_session(cli, tmp_path, gateway_address):
    user_id, _ = _sign_up(cli)
    store = SessionStore(_sessions_file(tmp_path).parent)
    stale = Credential(gateway_address, None, store)
    open_channel(gateway_address, None, stale).close()
    path = _sessions_file(tmp_path)
    data = json.loads(path.read_text())
    data["sessions"][gateway_address]["access_expire_time"] = 0.0
    path.write_text(json.dumps(data))
    # Another run refreshes the tokens and saves the new ones.
    assert cli("users", "get", user_id).status == 0
    newer = _saved(tmp_path, gateway_address)

    assert stale.renew() is True
    assert stale.bearer() == newer["access_token"]
    # The old refresh token was never presented again, so the session lives.
    result = cli("users", "get", user_id)
    assert result.status == 0, result.stderr
    assert _saved(tmp_path, gateway_address) == newer


def test_ended_session_requests_signin(cli, tmp_path, gateway_address):
    user_id, _ = _sign_up(cli)
    path = _sessions_file(tmp_path)
    data = json.loads(path.read_text())
    data["sessions"][gateway_address]["access_token"] = "not-a-token"
    data["sessions"][gateway_address]["refresh_token"] = "not-a-refresh-token"
    path.write_text(json.dumps(data))

    result = cli("users", "get", user_id)

    assert result.status == 1
    assert "saved session has ended" in result.stderr


def test_multiline_env_token_rejected(cli, data_dir, monkeypatch):
    user_id, _ = _sign_up(cli)
    # An admin key lets the saved session create a key with a scope.
    operator_admin_key(data_dir, user_id, "ops")
    created = cli("auth", "keys", "create", "--name", "pasted", "--scope", "admin")
    assert created.status == 0, created.stderr
    secret = created.stdout.strip()
    # The whole output, as a user would paste it from a terminal.
    monkeypatch.setenv(TOKEN_ENV, created.stderr + created.stdout)

    result = cli("users", "get", user_id)

    assert result.status == 2
    assert f"the token in {TOKEN_ENV} is invalid" in result.stderr
    assert "contains a line break at character" in result.stderr
    assert "what `splitlog auth keys create` prints on standard output" in (
        result.stderr
    )
    assert "Illegal header" not in result.stderr
    assert "Run the same command again" not in result.stderr
    assert secret not in result.stderr

    monkeypatch.setenv(TOKEN_ENV, secret)
    assert cli("users", "get", user_id).status == 0


def test_empty_token_rejected(cli, monkeypatch):
    user_id, _ = _sign_up(cli)
    assert cli("users", "get", user_id).status == 0

    from_option = cli("users", "get", user_id, "--token", "")
    monkeypatch.setenv(TOKEN_ENV, "")
    from_env = cli("users", "get", user_id)

    assert from_option.status == 2
    assert "--token is empty" in from_option.stderr
    assert user_id not in from_option.stdout
    assert from_env.status == 2
    assert f"{TOKEN_ENV} is set but empty" in from_env.stderr
    assert user_id not in from_env.stdout


@pytest.mark.parametrize(
    ("token", "problem"),
    [
        ("abc def", "whitespace (U+0020) at character 4 of 7"),
        ("abc\tdef", "whitespace (U+0009) at character 4 of 7"),
        ("abc\u00e9", "the character U+00E9 at character 4 of 4"),
        ("abc\x00", "the character U+0000 at character 4 of 4"),
    ],
)
def test_bad_option_token_rejected(cli, token, problem):
    result = cli("users", "get", "someone", "--token", token)

    assert result.status == 2
    assert f"the token in --token is invalid: it contains {problem}" in result.stderr
    assert "Set --token to the token alone" in result.stderr


def test_bad_saved_token_names_file(cli, tmp_path, gateway_address):
    user_id, _ = _sign_up(cli)
    path = _sessions_file(tmp_path)
    data = json.loads(path.read_text())
    saved = data["sessions"][gateway_address]
    saved["access_token"] = saved["access_token"] + "\n"
    path.write_text(json.dumps(data))

    result = cli("users", "get", user_id)

    assert result.status == 2
    assert f"the session saved for {gateway_address} in {path}" in result.stderr
    assert "contains a line break" in result.stderr
    assert "Sign in again with `splitlog auth signin --email EMAIL`" in result.stderr


def test_api_key_lifecycle(cli, data_dir, monkeypatch):
    user_id, _ = _sign_up(cli)

    for scope in ("admin", "logs:write"):
        self_granted = cli("auth", "keys", "create", "--name", "ops",
                           "--scope", scope)  # fmt: skip
        assert self_granted.status == 1
        assert "only an administrator" in self_granted.stderr
        assert "splitlog admin-key USER_ID" in self_granted.stderr
    admin_name, secret = operator_admin_key(data_dir, user_id, "ops")
    # The admin key makes the saved session's access token an administrator's.
    created = cli("auth", "keys", "create", "--name", "shipper",
                  "--scope", "logs:write", "--expires-in", "30d")  # fmt: skip
    assert created.status == 0, created.stderr
    assert "shown only this once" in created.stderr
    assert "logs:write" in created.stderr
    # Only the secret goes to stdout, so a script can capture it.
    shipper_secret = created.stdout.strip()
    assert "\n" not in shipper_secret
    assert shipper_secret not in created.stderr
    shipped = cli("users", "get", user_id, "--token", shipper_secret)
    assert shipped.status == 1
    assert "PERMISSION_DENIED" in shipped.stderr

    listed = cli("auth", "keys", "list")
    assert listed.status == 0, listed.stderr
    assert "shipper" in listed.stdout
    assert "ops" in listed.stdout
    assert secret not in listed.stdout

    cli("auth", "signout")
    with_key = cli("users", "get", user_id, "--token", secret)
    assert with_key.status == 0, with_key.stderr
    monkeypatch.setenv(TOKEN_ENV, secret)
    assert cli("users", "get", user_id).status == 0
    monkeypatch.delenv(TOKEN_ENV)

    revoked = cli("auth", "keys", "revoke", "ops", "--token", secret,
                  "--user", user_id)  # fmt: skip
    assert revoked.status == 0, revoked.stderr
    assert admin_name in revoked.stdout
    refused = cli("users", "get", user_id, "--token", secret)
    assert refused.status == 1
    assert "Check the token given by --token" in refused.stderr


def test_admin_manages_other_users_keys(cli, data_dir):
    other_id, _ = _sign_up(cli)
    # Each sign-up replaces the saved session.
    _sign_up(cli)
    plain = cli("auth", "keys", "list", "--user", other_id)
    assert plain.status == 1
    assert "only the user itself or an administrator may" in plain.stderr

    # The gateway keeps the result of a token's check for auth_cache_seconds,
    # so the token gets its admin key before its first call.
    admin_id, _ = _sign_up(cli)
    operator_admin_key(data_dir, admin_id)
    created = cli("auth", "keys", "create", "--name", "issued",
                  "--scope", "logs:read", "--user", other_id)  # fmt: skip
    assert created.status == 0, created.stderr
    assert f"users/{other_id}/apiKeys/" in created.stderr
    listed = cli("auth", "keys", "list", "--user", other_id)
    assert listed.status == 0, listed.stderr
    assert "issued" in listed.stdout
    revoked = cli("auth", "keys", "revoke", "issued", "--user", other_id)
    assert revoked.status == 0, revoked.stderr


def test_keys_user_option_help(cli, capsys):
    for action in ("create", "list", "revoke"):
        with pytest.raises(SystemExit):
            main(["auth", "keys", action, "--help"])
        shown = " ".join(capsys.readouterr().out.split())
        assert "naming another user needs an administrator's credential" in shown


def test_key_lifetime_past_year_9999(cli):
    result = cli("auth", "keys", "create", "--name", "forever",
                 "--scope", "logs:write", "--expires-in", "100000000d")  # fmt: skip

    assert result.status == 2, result.stderr
    assert "invalid value '100000000d' for --expires-in" in result.stderr
    assert "after the year 9999; give a shorter lifetime" in result.stderr
    assert "Traceback" not in result.stderr


def test_logs_write_key_scope(cli, data_dir):
    user_id, _ = _sign_up(cli)
    operator_admin_key(data_dir, user_id)
    created = cli("auth", "keys", "create", "--name", "shipper",
                  "--scope", "logs:write", "--format", "json")  # fmt: skip
    secret = json.loads(created.stdout)["secret"]

    result = cli("users", "get", user_id, "--token", secret)

    assert result.status == 1
    assert "PERMISSION_DENIED" in result.stderr


def test_secrets_stay_out_of_output(cli, tmp_path, gateway_address, caplog):
    caplog.set_level(logging.DEBUG)
    user_id, email = _sign_up(cli)
    outputs = [
        cli("auth", "signin", "--email", email, "--password-stdin",
            stdin=PASSWORD + "\n"),
        cli("auth", "signin", "--email", email, "--password-stdin",
            "--format", "json", stdin=PASSWORD + "\n"),
        cli("users", "get", user_id),
        cli("auth", "keys", "list"),
    ]  # fmt: skip
    session = _saved(tmp_path, gateway_address)
    secrets = [PASSWORD, session["access_token"], session["refresh_token"]]

    cli("auth", "signout")
    outputs.append(cli("users", "get", user_id, "--token", session["access_token"]))

    text = "\n".join(o.stdout + o.stderr for o in outputs) + caplog.text
    for secret in secrets:
        assert secret not in text


def test_logs_commands_send_session(cli):
    # No log service listens behind this gateway: a call that passes
    # authentication fails further on, with another status.
    refused = cli("logs", "query", "--since=-5m")
    assert refused.status == 1
    assert "UNAUTHENTICATED" in refused.stderr

    _sign_up(cli)
    result = cli("logs", "query", "--since=-5m")

    assert result.status == 1
    assert "UNAUTHENTICATED" not in result.stderr, result.stderr


def test_groups_list_defaults_to_signed_in_user(cli, tmp_path, gateway_address):
    user_id, _ = _sign_up(cli)
    created = cli("groups", "create", "--name", "Trip", "--creator", user_id,
                  "--format", "json")  # fmt: skip
    assert created.status == 0, created.stderr
    group = json.loads(created.stdout)["name"]
    access_token = _saved(tmp_path, gateway_address)["access_token"]

    listed = cli("groups", "list", "--format", "json")
    _sessions_file(tmp_path).unlink()
    with_token = cli("groups", "list", "--token", access_token, "--format", "json")

    assert listed.status == 0, listed.stderr
    assert [found["name"] for found in json.loads(listed.stdout)["groups"]] == [group]
    assert with_token.status == 0, with_token.stderr
    assert json.loads(with_token.stdout) == json.loads(listed.stdout)


def test_users_list_shows_plain_user_only_self(cli, capsys):
    _sign_up(cli)
    # The last signup is the saved session.
    user_id, _ = _sign_up(cli)

    listed = cli("users", "list", "--format", "json")
    with pytest.raises(SystemExit):
        cli("users", "list", "--help")
    help_text = " ".join(capsys.readouterr().out.split())

    assert listed.status == 0, listed.stderr
    assert [user["name"] for user in json.loads(listed.stdout)["users"]] == [
        f"users/{user_id}"
    ]
    assert "list every user," not in help_text
    assert "else only your own account" in help_text


def test_unknown_user_advice_fits_plain_user(cli):
    user_id, _ = _sign_up(cli)
    created = cli("groups", "create", "--name", "Trip", "--creator", user_id,
                  "--format", "json")  # fmt: skip
    assert created.status == 0, created.stderr
    group = json.loads(created.stdout)["name"]

    result = cli("groups", "add-member", group, "nobody-here")
    text = " ".join(result.stderr.split())

    assert result.status == 1
    assert "(NOT_FOUND, USER_NOT_FOUND)" in text
    assert "user 'users/nobody-here' does not exist; check the id" in text
    assert "ListGroupMembers lists the members of a group you are in" in text
    assert "an administrator can list every user with ListUsers" in text


def test_groups_list_without_user_exits_2(cli):
    result = cli("groups", "list")

    assert result.status == 2
    assert "--member is missing, and no user is signed in to" in result.stderr
    assert "splitlog auth signin --email EMAIL" in result.stderr
    assert result.stdout == ""


def test_groups_list_with_key_needs_member(cli, data_dir, tmp_path):
    user_id, _ = _sign_up(cli)
    _, secret = operator_admin_key(data_dir, user_id)
    _sessions_file(tmp_path).unlink()

    result = cli("groups", "list", "--token", secret)
    listed = cli("groups", "list", "--token", secret, "--member", user_id)

    assert result.status == 2
    assert "--member is missing" in result.stderr
    assert "names no user (an API key never does)" in result.stderr
    assert listed.status == 0, listed.stderr


def test_admin_key_text_output(cli, data_dir, capsys):
    user_id, _ = _sign_up(cli)

    status = main(["admin-key", user_id, "--data-dir", str(data_dir)])
    captured = capsys.readouterr()

    assert status == 0, captured.err
    # stdout is often a file, so stderr must not promise the secret below.
    assert captured.err.startswith(f"created users/{user_id}/apiKeys/")
    assert captured.err.endswith(
        "Its secret is printed on standard output, only this once.\n"
    )
    assert captured.out.startswith("slk_")
    assert captured.out.count("\n") == 1
    assert captured.out.strip() not in captured.err


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b'{"sessions": {', "cannot read"),
        (b"\xff\xfe{}", "cannot read"),
        (b"[]", 'has no "sessions" object'),
        (b'{"sessions": {"ADDRESS": {"user": 3}}}', "is not the record"),
        (b'{"sessions": {"ADDRESS": "token"}}', "is not the record"),
    ],
)
def test_corrupt_sessions_file_warns(cli, tmp_path, gateway_address, content, problem):
    path = _sessions_file(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_bytes(content.replace(b"ADDRESS", gateway_address.encode()))

    result = cli("users", "list")
    warning = result.stderr.splitlines()[0]

    assert result.status == 1
    assert "Traceback" not in result.stderr
    assert warning.startswith("splitlog: warning: ")
    assert problem in warning
    assert "Sign in again with `splitlog auth signin --email EMAIL`" in warning
    assert warning.endswith(f"or delete {path}")
    assert result.stderr.count("warning") == 1
    assert "not signed in to" in result.stderr


def test_corrupt_sessions_file_replaced(cli, tmp_path):
    path = _sessions_file(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    user_id, email = _sign_up(cli)
    path.write_text("{not json")

    signed_in = cli("auth", "signin", "--email", email, "--password-stdin",
                    stdin=PASSWORD + "\n")  # fmt: skip
    result = cli("users", "get", user_id)

    assert signed_in.status == 0, signed_in.stderr
    assert "warning" not in signed_in.stderr
    assert result.status == 0, result.stderr
    assert result.stderr == ""


def test_unreadable_sessions_file_warns(cli, tmp_path):
    path = _sessions_file(tmp_path)
    path.mkdir(parents=True)

    result = cli("users", "list")

    assert result.status == 1
    assert f"splitlog: warning: cannot read {path}" in result.stderr
    assert "Traceback" not in result.stderr


DEACTIVATED_ADVICE = "is deactivated, so its sessions and API keys no longer work"


def _deactivated_user(cli, data_dir, gateway_address) -> tuple[str, str]:
    """Sign up a user, deactivate it, and return its id and email.

    The user's session stays saved, as on the user's own machine.
    """
    admin_id, _ = _sign_up(cli)
    _, admin_key = operator_admin_key(data_dir, admin_id)
    user_id, email = _sign_up(cli)
    with grpc.insecure_channel(gateway_address) as channel:
        users_grpc.UsersServiceStub(channel).DeactivateUser(
            users_pb2.DeactivateUserRequest(name=f"users/{user_id}"),
            metadata=(("authorization", f"Bearer {admin_key}"),),
            timeout=10,
        )
    return user_id, email


def test_deactivated_session_needs_administrator(cli, data_dir, gateway_address):
    user_id, email = _deactivated_user(cli, data_dir, gateway_address)

    result = cli("users", "get", user_id)
    signed_in = cli("auth", "signin", "--email", email, "--password-stdin",
                    stdin=PASSWORD + "\n")  # fmt: skip

    assert result.status == 1
    assert f"The account users/{user_id} {DEACTIVATED_ADVICE}" in result.stderr
    assert "signing in again will not help" in result.stderr
    assert "ask an administrator" in result.stderr
    assert "Sign in again" not in result.stderr
    assert signed_in.status == 1
    assert "USER_DEACTIVATED" in signed_in.stderr
    assert f"The account {DEACTIVATED_ADVICE}" in signed_in.stderr


def test_deactivated_token_needs_administrator(
    cli, data_dir, tmp_path, gateway_address
):
    user_id, _ = _deactivated_user(cli, data_dir, gateway_address)
    access_token = _saved(tmp_path, gateway_address)["access_token"]
    _sessions_file(tmp_path).unlink()

    result = cli("users", "get", user_id, "--token", access_token)

    assert result.status == 1
    assert f"The account users/{user_id} {DEACTIVATED_ADVICE}" in result.stderr
    assert "Check the token" not in result.stderr


def test_deactivated_refresh_needs_administrator(
    cli, data_dir, tmp_path, gateway_address
):
    user_id, _ = _deactivated_user(cli, data_dir, gateway_address)
    # The gateway rejects this token as malformed, so only the failed
    # refresh tells that the user is deactivated.
    path = _sessions_file(tmp_path)
    data = json.loads(path.read_text())
    data["sessions"][gateway_address]["access_token"] = "not-a-token"
    path.write_text(json.dumps(data))

    result = cli("users", "get", user_id)

    assert result.status == 1
    assert f"The account users/{user_id} {DEACTIVATED_ADVICE}" in result.stderr
    assert "saved session has ended" not in result.stderr


def test_session_save_removes_abandoned_temporaries(tmp_path):
    directory = tmp_path / "splitlog"
    directory.mkdir()
    # What `write_file_atomically` leaves when a command is killed before
    # its rename.
    stale = directory / ".sessions.json.o83txpw8.tmp"
    stale.write_text('{"sessions": {"127.0.0.1:1": {"access_tok')
    session = Session("users/ada", "access", 1.0, "refresh", 2.0)

    SessionStore(directory).save("127.0.0.1:1", session)

    assert not stale.exists()
    assert SessionStore(directory).load("127.0.0.1:1") == session
