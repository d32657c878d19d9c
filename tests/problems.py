"""Checking the API's error answers: RFC 9457 problem details."""

from __future__ import annotations

from typing import Any

import httpx

PROBLEM = "application/problem+json"


def problem(response: httpx.Response, status: int) -> dict[str, Any]:
    """Assert ``response`` is a problem with ``status`` (and a title, detail and type); its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["title"] and body["detail"] and body["type"]
    return body
