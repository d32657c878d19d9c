"""``/api/v1/users`` and ``/api/v1/acl``: the password file and ACL file the broker uses
(``password_file``, ``acl_file``), edited in place and reloaded, so a change applies to the next
CONNECT, PUBLISH or SUBSCRIBE without a restart (connections and subscriptions already made are
not re-checked). Files are rewritten atomically, comments kept; 409 if the file is not configured
or has become invalid. Per-listener files are not managed here.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal, cast

from fastapi import FastAPI, Response
from fastapi import Path as PathParam

from ..auth.acl import (
    ACCESS_NAMES,
    ACCESS_WORDS,
    AclFileError,
    AclRules,
    Rule,
    insert_rule,
    remove_line,
    rule_line,
    save_acl_text,
)
from ..auth.passwords import PasswordFile, PasswordFileError, check_username
from .models import AccessWord, AclList, AclRule, AclRuleCreate, UserCreate, UserList, UserResult
from .problems import Problem, field_error, problem_responses
from .routing import BODY_RESPONSES, WRITE_RESPONSES, v1_router

if TYPE_CHECKING:
    from ..broker.broker import Broker


def acl_rule_id(kind: str, user: str | None, access: str, topic: str) -> str:
    return hashlib.sha256(json.dumps([kind, user, access, topic]).encode()).hexdigest()[:16]


def rule_out(user: str | None, rule: Rule) -> AclRule:
    kind: Literal["topic", "pattern"] = "pattern" if rule.pattern else "topic"
    access = ACCESS_NAMES[rule.access]
    topic = "/".join(rule.levels)
    owner = None if rule.pattern else user
    return AclRule(
        id=acl_rule_id(kind, owner, access, topic),
        kind=kind,
        user=owner,
        access=cast(AccessWord, access),
        topic=topic,
        line=rule.line,
    )


def _configured(path: Path | None, key: str) -> Path:
    if path is None:
        raise Problem(409, f"no {key} is configured, so there is nothing to manage", kind="not-configured")
    return path


def _file_invalid(exc: Exception) -> Problem:
    return Problem(409, f"{exc}; fix the file first", kind="file-invalid", title="File invalid")


def install(app: FastAPI, broker: Broker) -> None:
    router = v1_router("users and ACL", manage=True)
    lock = asyncio.Lock()  # one edit of the files at a time: each is read, changed and replaced
    not_configured = problem_responses(409)
    writes = {**WRITE_RESPONSES, **not_configured}

    def load_passwords() -> PasswordFile:
        path = _configured(broker.config.password_file, "password_file")
        try:
            return PasswordFile.load(path)
        except PasswordFileError as exc:
            raise _file_invalid(exc) from None

    def load_acl() -> tuple[str, AclRules]:
        path = _configured(broker.config.acl_file, "acl_file")
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise _file_invalid(AclFileError(path, f"cannot read: {exc}")) from None
        try:
            return text, AclRules.parse(text, path)
        except AclFileError as exc:
            raise _file_invalid(exc) from None

    # -- users ------------------------------------------------------------------------------------

    @router.get("/users", summary="List the users of the password file", responses=not_configured)
    async def list_users() -> UserList:
        passwords = load_passwords()
        return UserList(password_file=str(passwords.path), users=passwords.usernames())

    @router.post(
        "/users",
        summary="Add a user, or set a user's password",
        responses={**writes, **BODY_RESPONSES, 201: {"model": UserResult, "description": "The user was added"}},
    )
    async def set_user(user: UserCreate, response: Response) -> UserResult:
        problem = check_username(user.username)
        if problem:
            raise Problem.invalid([field_error(("body", "username"), problem)])
        async with lock:
            passwords = load_passwords()
            # argon2 takes tens of milliseconds: not on the event loop.
            created = await asyncio.to_thread(passwords.set_password, user.username, user.password)
            passwords.save()
            broker.reload()
        response.status_code = 201 if created else 200
        return UserResult(username=user.username, created=created)

    @router.delete(
        "/users/{username}",
        summary="Delete a user",
        status_code=204,
        responses={**writes, **problem_responses(404)},
    )
    async def delete_user(username: str) -> Response:
        async with lock:
            passwords = load_passwords()
            if not passwords.delete(username):
                raise Problem(404, f"no user {username!r} in {passwords.path}")
            passwords.save()
            broker.reload()
        return Response(status_code=204)

    # -- ACL rules --------------------------------------------------------------------------------

    @router.get("/acl", summary="List the rules of the ACL file", responses=not_configured)
    async def list_acl() -> AclList:
        _, rules = load_acl()
        assert rules.path is not None
        return AclList(acl_file=str(rules.path), rules=[rule_out(user, rule) for user, rule in rules.entries()])

    @router.post(
        "/acl",
        summary="Add an ACL rule",
        responses={**writes, **BODY_RESPONSES, 201: {"model": AclRule, "description": "The rule was added"}},
    )
    async def add_acl_rule(new: AclRuleCreate, response: Response) -> AclRule:
        """A ``topic`` rule goes at the end of its user's section (``user`` null: the anonymous
        rules before the first ``user`` line), a new section is added for a new user, and a
        ``pattern`` goes at the end of the file. Adding a rule that exists changes nothing (200)."""
        wanted = acl_rule_id(new.kind, new.user, new.access, new.topic)
        async with lock:
            text, rules = load_acl()
            for user, rule in rules.entries():
                if rule_out(user, rule).id == wanted:
                    return rule_out(user, rule)
            line = rule_line(ACCESS_WORDS[new.access], new.topic, new.kind == "pattern")
            changed = insert_rule(text, line, new.user)
            try:
                parsed = AclRules.parse(changed, rules.path or Path("acl"))
            except AclFileError as exc:
                raise Problem.invalid([field_error(("body", "topic"), str(exc).rpartition(": ")[2])]) from None
            assert rules.path is not None
            save_acl_text(rules.path, changed)
            broker.reload()
        response.status_code = 201
        return next(rule_out(user, rule) for user, rule in parsed.entries() if rule_out(user, rule).id == wanted)

    @router.delete(
        "/acl/{rule_id}",
        summary="Delete an ACL rule",
        status_code=204,
        responses={**writes, **problem_responses(404)},
    )
    async def delete_acl_rule(
        rule_id: Annotated[str, PathParam(description="The rule's id, from GET /api/v1/acl.")],
    ) -> Response:
        async with lock:
            text, rules = load_acl()
            found = [rule for user, rule in rules.entries() if rule_out(user, rule).id == rule_id]
            if not found:
                raise Problem(404, f"no ACL rule with id {rule_id!r}")
            assert rules.path is not None
            save_acl_text(rules.path, remove_line(text, found[0].line))
            broker.reload()
        return Response(status_code=204)

    app.include_router(router)
