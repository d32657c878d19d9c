"""``wrenmq passwd add|delete|list FILE [USER]``: manage a password file, as ``mosquitto_passwd`` does.

Kept import-light (argon2 is imported when the command runs): ``wrenmq`` builds every subcommand's
parser on each invocation. A running broker picks the changes up by itself within a few seconds
(or at once on SIGHUP).
"""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path

__all__ = ["add_parser", "run"]

EXIT_OK, EXIT_FAILURE = 0, 1


def add_parser(subcommands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subcommands.add_parser(
        "passwd",
        help="manage a password file (argon2id hashes)",
        description="Add, delete or list the users of a password file (one user:$argon2id$... line each). "
        "The file is rewritten atomically with mode 0600.",
    )
    actions = parser.add_subparsers(title="actions", metavar="ACTION", dest="action", required=True)
    add = actions.add_parser(
        "add",
        help="add a user or change its password",
        description="Add USER to FILE, or set a new password for it. Without -p or --stdin the password "
        "is asked for twice on the terminal.",
    )
    add.add_argument("file", type=Path, metavar="FILE")
    add.add_argument("user", metavar="USER")
    add.add_argument("-c", "--create", action="store_true", help="create a new FILE (replacing one that exists)")
    source = add.add_mutually_exclusive_group()
    source.add_argument("-p", "--password", metavar="PASSWORD", help="the password (visible to other local users)")
    source.add_argument("--stdin", action="store_true", help="read the password from the first line of stdin")
    delete = actions.add_parser("delete", help="delete a user", description="Remove USER from FILE.")
    delete.add_argument("file", type=Path, metavar="FILE")
    delete.add_argument("user", metavar="USER")
    listing = actions.add_parser("list", help="list the user names", description="Print FILE's user names.")
    listing.add_argument("file", type=Path, metavar="FILE")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from .passwords import PasswordFile, PasswordFileError, check_username

    path: Path = args.file
    try:
        if args.action == "add" and args.create:
            passwords = PasswordFile(path)
        elif args.action == "add" and not path.exists():
            return _fail(f"{path} does not exist (use -c to create it)")
        else:
            passwords = PasswordFile.load(path)
        if args.action == "list":
            for username in passwords.usernames():
                print(username)
            return EXIT_OK
        if args.action == "delete":
            if not passwords.delete(args.user):
                return _fail(f"user {args.user!r} is not in {path}")
            passwords.save()
            return EXIT_OK
        problem = check_username(args.user)
        if problem:
            return _fail(problem)
        password = _password(args)
        if password is None:
            return EXIT_FAILURE
        passwords.set_password(args.user, password)
        passwords.save()
    except PasswordFileError as exc:
        return _fail(str(exc))
    except OSError as exc:
        return _fail(f"{path}: cannot write: {exc.strerror or exc}")
    return EXIT_OK


def _password(args: argparse.Namespace) -> str | None:
    """The new password from -p, stdin or two prompts; None (after saying why) if there is none."""
    if args.password is not None:
        password: str = args.password
    elif args.stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        try:
            password = getpass.getpass("Password: ")
            if getpass.getpass("Reenter password: ") != password:
                _fail("the passwords do not match")
                return None
        except (EOFError, KeyboardInterrupt):
            print(file=sys.stderr)
            _fail("no password given")
            return None
    if not password:
        _fail("the password is empty")
        return None
    return password


def _fail(message: str) -> int:
    print(f"wrenmq passwd: error: {message}", file=sys.stderr)
    return EXIT_FAILURE
