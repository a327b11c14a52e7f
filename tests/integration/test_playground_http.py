"""The playground page's routes over HTTP, without a browser (tests/browser drives the
page itself): served at / with a policy that keeps the browser on this server, public
where tokens guard the API, listed in /openapi.json, and gone with --no-playground.
"""

from __future__ import annotations

from pathlib import Path

import httpx
from _running import running, settings

from actgrad_server.app import ActgradServer
from actgrad_server.http import playground


def _get(server: ActgradServer, path: str, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.get(f"http://127.0.0.1:{server.http_port}{path}", headers=headers, timeout=30.0)


def test_the_page_and_its_files_are_served_with_a_self_only_policy(server: ActgradServer) -> None:
    page = _get(server, "/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert '<script src="/playground/playground.js"' in page.text
    total = len(page.content)
    for name in ("playground.js", "playground.css"):
        answer = _get(server, f"/playground/{name}")
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith(playground.ASSETS[name].split(";")[0])
        total += len(answer.content)
    assert total == playground.page_bytes()
    for name in ("index.html", "nothing.js", "..%2Fplayground.py"):
        missing = _get(server, f"/playground/{name}")
        assert missing.status_code == 404 and "error" in missing.json()
    # A name is quoted as every request value is: cut, with its length.
    long_name = "x" * 5000
    error = _get(server, f"/playground/{long_name}").json()["error"]
    assert "(5000 characters)" in error and len(error) < 200
    paths = _get(server, "/openapi.json").json()["paths"]
    assert "/" in paths and "/playground/{name}" in paths


def test_the_page_needs_no_token_but_its_calls_do(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("s3cret\n")
    with running(settings(auth_token_file=str(tokens))) as server:
        assert _get(server, "/").status_code == 200
        assert _get(server, "/playground/playground.js").status_code == 200
        refused = _get(server, "/v1/functions")
        assert refused.status_code == 401 and "bearer token" in refused.json()["error"]
        # Only the page's own files are public.
        assert _get(server, "/playground/nothing.js").status_code == 401
        good = {"Authorization": "Bearer s3cret"}
        assert _get(server, "/v1/functions", headers=good).status_code == 200
        server.refusing.set()  # the drain's refusal covers the page too
        assert _get(server, "/").status_code == 503


def test_no_playground_leaves_it_out() -> None:
    with running(settings(playground=False)) as server:
        answer = _get(server, "/")
        assert answer.status_code == 404 and "no route /" in answer.json()["error"]
        assert _get(server, "/playground/playground.js").status_code == 404
        paths = _get(server, "/openapi.json").json()["paths"]
        assert "/" not in paths and "/playground/{name}" not in paths
        assert _get(server, "/v1/functions").status_code == 200
