"""``wrenmq passwd``: manage a password file, in wrenmq's words or in ``mosquitto_passwd``'s.

::

    wrenmq passwd add [-c] FILE USER [-p PASSWORD | --stdin]    wrenmq passwd list FILE
    wrenmq passwd delete FILE USER
    wrenmq passwd [-c] FILE USER          (mosquitto_passwd: asks for the password twice)
    wrenmq passwd [-c] -b FILE USER PASSWORD
    wrenmq passwd -D FILE USER            wrenmq passwd -U FILE

Kept import-light (argon2 is imported when the command runs): ``wrenmq`` builds every subcommand's
parser on each invocation. A running broker picks the changes up by itself within a few seconds
(or at once on SIGHUP).
"""

from __future__ import annotations

import argparse
import getpass
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = ["add_parser", "run"]

EXIT_OK, EXIT_FAILURE = 0, 1
ACTIONS = ("add", "delete", "list")

USAGE = """wrenmq passwd add [-c] FILE USER [-p PASSWORD | --stdin]
       wrenmq passwd delete FILE USER
       wrenmq passwd list FILE
       wrenmq passwd [-c] [-b] FILE USER [PASSWORD]    (as mosquitto_passwd)
       wrenmq passwd -D FILE USER
       wrenmq passwd -U FILE"""


def add_parser(subcommands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    # The words go to _parser() whole: options may come anywhere among them (`add -c FILE USER -p X`,
    # `-b FILE USER PASSWORD`), which only parse_intermixed_args allows, and a subparser cannot use it.
    outer = subcommands.add_parser(
        "passwd",
        help="manage a password file (argon2id hashes; mosquitto_passwd's flags work too)",
        usage=USAGE,
        add_help=False,
        prefix_chars="\x00",  # no options here: every word, flags included, is passed on
    )
    outer.add_argument("argv", nargs="*")
    outer.set_defaults(run=run)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wrenmq passwd",
        usage=USAGE,
        description="Add, delete or list the users of a password file (one user:$argon2id$... line each). "
        "The file is rewritten atomically with mode 0600. Without -p, --stdin or -b the password is asked "
        "for twice on the terminal. Hashes made by mosquitto_passwd ($6$, $7$) are kept until that user's "
        "password is set again.",
    )
    parser.add_argument("words", nargs="+", metavar="ACTION|FILE", help="add|delete|list FILE [USER], or FILE USER")
    parser.add_argument("-c", "--create", action="store_true", help="create a new FILE (replacing one that exists)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("-p", "--password", metavar="PASSWORD", help="the password (visible to other local users)")
    source.add_argument("--stdin", action="store_true", help="read the password from the first line of stdin")
    source.add_argument("-b", dest="batch", action="store_true", help="mosquitto_passwd: PASSWORD follows USER")
    parser.add_argument("-D", dest="delete", action="store_true", help="mosquitto_passwd: delete USER")
    parser.add_argument(
        "-U", dest="update", action="store_true", help="mosquitto_passwd: hash FILE's plain-text passwords"
    )
    parser.add_argument(
        "-H",
        dest="hash",
        choices=("sha512", "sha512-pbkdf2", "argon2id"),
        help="accepted for mosquitto_passwd's sake; wrenmq always writes argon2id",
    )
    return parser


@dataclass(frozen=True, slots=True)
class _Request:
    action: str  # add, delete, list or update
    file: Path
    user: str | None
    password: str | None  # from -p or -b


def _request(args: argparse.Namespace) -> _Request | str:
    """What the words and flags ask for, or why they make no sense."""
    words: list[str] = args.words
    if words[0] in ACTIONS and not (args.delete or args.update or args.batch):
        action, rest = words[0], words[1:]
        wanted = 1 if action == "list" else 2
        if len(rest) != wanted:
            return f"{action} takes {'FILE' if wanted == 1 else 'FILE USER'}"
        return _Request(action, Path(rest[0]), rest[1] if wanted == 2 else None, args.password)
    if args.update:
        if len(words) != 1 or args.delete or args.create:
            return "-U takes FILE alone"
        return _Request("update", Path(words[0]), None, None)
    if args.delete:
        if len(words) != 2 or args.create:
            return "-D takes FILE USER"
        return _Request("delete", Path(words[0]), words[1], None)
    if args.batch:
        if len(words) != 3:
            return "-b takes FILE USER PASSWORD"
        return _Request("add", Path(words[0]), words[1], words[2])
    if len(words) != 2:
        return "expected FILE USER (or add, delete, list: see wrenmq passwd --help)"
    return _Request("add", Path(words[0]), words[1], args.password)


def run(outer: argparse.Namespace) -> int:
    from .passwords import PasswordFile, PasswordFileError, check_username

    args = _parser().parse_intermixed_args(outer.argv)
    request = _request(args)
    if isinstance(request, str):
        return _fail(request)
    path = request.file
    try:
        if request.action == "add" and args.create:
            passwords = PasswordFile(path)
        elif request.action == "add" and not path.exists():
            return _fail(f"{path} does not exist (use -c to create it)")
        else:
            passwords = PasswordFile.load(path, plain=request.action == "update")
        if request.action == "list":
            for username in passwords.usernames():
                print(username)
            return EXIT_OK
        if request.action == "update":
            passwords.hash_plain()
            passwords.save()
            return EXIT_OK
        assert request.user is not None
        if request.action == "delete":
            if not passwords.delete(request.user):
                return _fail(f"user {request.user!r} is not in {path}")
            passwords.save()
            return EXIT_OK
        problem = check_username(request.user)
        if problem:
            return _fail(problem)
        password = _password(request.password, args.stdin)
        if password is None:
            return EXIT_FAILURE
        passwords.set_password(request.user, password)
        passwords.save()
    except PasswordFileError as exc:
        return _fail(str(exc))
    except OSError as exc:
        return _fail(f"{path}: cannot write: {exc.strerror or exc}")
    return EXIT_OK


def _password(given: str | None, stdin: bool) -> str | None:
    """The new password from -p/-b, stdin or two prompts; None (after saying why) if there is none."""
    if given is not None:
        password = given
    elif stdin:
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
