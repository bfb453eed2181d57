"""Cross-origin requests cannot submit or cancel tasks (scenario 13).

First the header sets browsers send, over plain HTTP; then a real browser (Debian's
Chromium, driven by Playwright): a page on another origin (another port of
127.0.0.1, "same-site", and ``localhost``, "cross-site") tries every request a page
may send without a CORS preflight, a form post included. The api's own page, same
origin, still submits and cancels.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from playwright.sync_api import Browser

from tasklab_devtools.browser import chromium

from .faultkit import Scenario

#: What a cross-site page may send without a preflight, and one that needs one.
ATTACK_PAGE = """<!doctype html>
<meta charset="utf-8"><title>attacking</title>
<iframe name="sink"></iframe>
<form id="f" method="POST" action="{api}/api/tasks" enctype="text/plain" target="sink">
  <input name='{{"method": "celery", "duration": 0, "label": "' value='"}}'>
</form>
<script>
const api = "{api}";
const victim = "{victim}";
const attempts = [
  ["cancel, no body", () => fetch(`${{api}}/api/tasks/${{victim}}/cancel`,
      {{method: "POST", mode: "no-cors"}})],
  ["submit, text/plain", () => fetch(`${{api}}/api/tasks`,
      {{method: "POST", mode: "no-cors", headers: {{"Content-Type": "text/plain"}},
        body: JSON.stringify({{method: "celery", duration: 0}})}})],
  ["submit, form", () => fetch(`${{api}}/api/tasks`,
      {{method: "POST", mode: "no-cors", body: new URLSearchParams({{method: "celery"}})}})],
  ["submit, JSON (preflight)", () => fetch(`${{api}}/api/tasks`,
      {{method: "POST", headers: {{"Content-Type": "application/json"}},
        body: JSON.stringify({{method: "celery", duration: 0}})}})],
];
window.results = {{}};
(async () => {{
  for (const [name, go] of attempts) {{
    try {{ const r = await go(); window.results[name] = r.type + " " + r.status; }}
    catch (e) {{ window.results[name] = "blocked: " + e.name; }}
  }}
  const sink = document.querySelector("iframe");
  const loaded = new Promise((ok) => sink.addEventListener("load", ok, {{once: true}}));
  document.getElementById("f").submit();
  await loaded;
  window.results["form post"] = "sent";
  document.title = "done";
}})();
</script>
"""


class _Page(BaseHTTPRequestHandler):
    body = b""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def attacker() -> Iterator[tuple[ThreadingHTTPServer, type[_Page]]]:
    """A web server on another origin (127.0.0.1, another port) serving one page."""
    handler = type("AttackPage", (_Page,), {})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server, handler
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as b:
        yield b


def browser_like(origin: str, site: str, mode: str = "no-cors") -> dict[str, str]:
    return {
        "Origin": origin,
        "Referer": f"{origin}/",
        "Sec-Fetch-Site": site,
        "Sec-Fetch-Mode": mode,
        "Sec-Fetch-Dest": "empty",
        "User-Agent": "Mozilla/5.0 (X11; Linux x86_64) Chrome/130.0 Safari/537.36",
    }


@pytest.mark.scenario("13 cross-origin requests")
def test_cross_origin_cannot_submit_or_cancel(
    scenario: Scenario,
    browser: Browser,
    attacker: tuple[ThreadingHTTPServer, type[_Page]],
) -> None:
    fx = scenario.fx
    api = fx.base_url
    victim = scenario.submit_ok(method="celery", duration=30)  # cancelled at the end
    total = scenario.http.get("/api/tasks", params={"limit": 1}).json()["total"]

    # The header sets a browser sends for a cross-site page's requests.
    for origin, site in (("https://evil.example", "cross-site"), ("null", "cross-site")):
        head = browser_like(origin, site)
        for path, content, ctype in (
            (f"/api/tasks/{victim['id']}/cancel", b"", None),
            ("/api/tasks", b'{"method": "celery", "duration": 0}', "text/plain"),
            ("/api/tasks", b"method=celery", "application/x-www-form-urlencoded"),
            ("/api/tasks", b'{"method": "celery", "duration": 0}', "application/json"),
        ):
            sent = {**head, **({"Content-Type": ctype} if ctype else {})}
            resp = scenario.http.post(path, content=content, headers=sent)
            assert resp.status_code == 403, (origin, path, resp.text)
            assert "cross-origin" in resp.json()["detail"]
            assert "access-control-allow-origin" not in resp.headers
        preflight = scenario.http.options(
            "/api/tasks",
            headers={**head, "Access-Control-Request-Method": "POST"},
        )
        assert "access-control-allow-origin" not in preflight.headers

    # A real browser, from a page on another origin (same-site, then cross-site).
    server, handler = attacker
    port = server.server_address[1]
    outcomes: dict[str, dict[str, str]] = {}
    for host in ("127.0.0.1", "localhost"):
        page_url = f"http://{host}:{port}/"
        handler.body = ATTACK_PAGE.format(api=api, victim=victim["id"]).encode()
        context = browser.new_context()
        try:
            page = context.new_page()
            page.goto(page_url)
            page.wait_for_function("document.title === 'done'", timeout=30_000)
            outcomes[host] = page.evaluate("window.results")
        finally:
            context.close()
    # Requests without a preflight were sent (opaque answers); the JSON one was blocked.
    for results in outcomes.values():
        assert results["cancel, no body"] == "opaque 0", results
        assert results["submit, JSON (preflight)"].startswith("blocked"), results
    assert scenario.http.get("/api/tasks", params={"limit": 1}).json()["total"] == total
    assert scenario.http.get(f"/api/tasks/{victim['id']}").json()["status"] != "CANCELLED"

    # The api's own page, same origin: submitting and cancelling work.
    context = browser.new_context(base_url=api)
    try:
        page = context.new_page()
        page.goto("/")
        own = page.evaluate(
            """async (victim) => {
                const s = await fetch("/api/tasks", {method: "POST",
                    headers: {"Content-Type": "application/json"},
                    body: JSON.stringify({method: "celery", duration: 0})});
                const c = await fetch(`/api/tasks/${victim}/cancel`, {method: "POST"});
                return [s.status, (await s.json()).id, c.status, (await c.json()).status];
            }""",
            victim["id"],
        )
    finally:
        context.close()
    assert own[0] == 202 and own[2] == 200 and own[3] == "CANCELLED", own
    scenario.accepted[own[1]] = "DONE"
    scenario.accepted[victim["id"]] = "CANCELLED"
    scenario.note("browser: same-site and cross-site pages refused, own page works")
    scenario.check()
