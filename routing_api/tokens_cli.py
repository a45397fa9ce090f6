"""``routing tokens``: create, revoke and list bearer tokens (see routing_api/auth.py)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

DEFAULT_TOKEN_FILE = Path("var") / "dispatcher.token"


def _store() -> Any:
    from sqlalchemy import inspect

    from graph_store.repository import make_engine
    from routing_api.auth import TokenStore
    from routing_api.cli import CliError, _settings

    engine = make_engine(_settings().database_url)
    if not inspect(engine).has_table("api_tokens"):
        engine.dispose()
        raise CliError("database not initialised: run `routing db upgrade` first")
    return TokenStore(engine)


def cmd_tokens(args: argparse.Namespace) -> int:
    from routing_api.cli import CliError

    store = _store()
    try:
        if args.action == "create":
            try:
                token = store.create(args.role, args.driver_id, args.name, args.rate_limit)
            except ValueError as exc:
                raise CliError(str(exc)) from None
            who = f" for driver {args.driver_id}" if args.driver_id else ""
            print(f"created {args.role} token{who} ({token[:10]}); it is shown only now:")
            print(token)
        elif args.action == "revoke":
            n = store.revoke(args.ref)
            if n == 0:
                raise CliError(f"no active token matches {args.ref!r}")
            print(f"revoked {n} token(s)")
        elif args.action == "list":
            for t in store.list():
                state = "revoked" if t["revoked"] else "active"
                who = t["driver_id"] or "-"
                print(f"{t['id']:>5}  {t['prefix']}  {t['role']:<10}  {who:<20}  {state:<7}  {t['name'] or ''}")
        else:  # ensure-dispatcher
            print(_ensure_dispatcher(store, Path(args.file)))
        return 0
    finally:
        store.engine.dispose()


def _ensure_dispatcher(store: Any, path: Path) -> str:
    """The local instance's dispatcher token: the one saved in ``path`` while it is valid, else a new one."""
    if path.is_file():
        token = path.read_text().strip()
        if token and store.verify(token) is not None:
            print(f"dispatcher token for this instance (from {path}):")
            return token
    token = str(store.create("dispatcher", name="local instance (make run)"))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(token + "\n")
    print(f"created a dispatcher token for this instance (saved in {path}):")
    return token


def register(sub: Any) -> None:
    tokens = sub.add_parser("tokens", help="bearer tokens: create, revoke, list")
    tsub = tokens.add_subparsers(dest="action", required=True)
    create = tsub.add_parser("create", help="create a token; it is printed as the last line, once")
    create.add_argument("--role", choices=("driver", "dispatcher"), required=True)
    create.add_argument("--driver-id", default=None, help="the driver a driver token acts for (required for drivers)")
    create.add_argument("--name", default=None, help="a note: who or what holds it")
    create.add_argument("--rate-limit", type=float, default=None,
                        help="requests/s for this token (0 = unlimited; default: the role's setting)")  # fmt: skip
    revoke = tsub.add_parser("revoke", help="revoke a token by its value, its 10-character prefix or its id")
    revoke.add_argument("ref")
    tsub.add_parser("list", help="list tokens (prefixes only; the values are not stored)")
    ensure = tsub.add_parser("ensure-dispatcher", help="print this instance's dispatcher token, creating it if needed")
    ensure.add_argument("--file", default=str(DEFAULT_TOKEN_FILE))
    tokens.set_defaults(func=cmd_tokens)
