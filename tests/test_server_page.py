"""The web chat at / in headless Chromium (Debian's, driven by Playwright) against a real server."""

from __future__ import annotations

import json
import time

import pytest
from playwright.sync_api import expect, sync_playwright

from serving import ServerProcess

KEY = "page-key"
CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]
XSS = "<img src=x onerror=alert(1)>"


@pytest.fixture(scope="module")
def server(default_model_path, tmp_path_factory):
    server = ServerProcess(["-m", str(default_model_path), "-c", "1024", "--api-key", KEY],
                           tmp_path_factory.mktemp("page") / "server.log")
    yield server
    server.stop()
    assert "Traceback" not in server.log()


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        # A fresh profile each launch; Playwright downloads no browser: it drives the system's.
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        yield browser
        browser.close()


def set_setting(page, name: str, value: str) -> None:
    page.locator("#settings summary").click()
    page.fill(f"#{name}", value)
    page.dispatch_event(f"#{name}", "change")


def test_chat_streams_stops_survives_reload_and_shows_html_as_text(server, browser):
    page = browser.new_page()
    dialogs = []

    def on_dialog(dialog):
        dialogs.append((dialog.type, dialog.message))
        dialog.accept(KEY) if dialog.type == "prompt" else dialog.dismiss()

    page.on("dialog", on_dialog)
    page.goto(server.url + "/")
    set_setting(page, "max_tokens", "600")

    # Send, and see the answer grow while it streams.
    page.fill("#prompt", "Write a very long story about a dragon and a knight.")
    page.click("#send")
    answer = page.locator(".message.assistant .content").last
    expect(answer).not_to_have_text("", timeout=60_000)
    first = len(answer.text_content())
    page.wait_for_function(f"document.querySelector('.message.assistant .content').textContent.length > {first + 20}")
    assert server.health()["queue"]["running"] == 1

    # Stop mid-answer: the page says so and the server stops generating at once.
    page.click("#stop")
    expect(page.locator(".message.assistant .note")).to_have_text("(stopped)")
    assert server.wait_idle(timeout=2.0) < 1.0
    stopped = answer.text_content()
    time.sleep(0.3)
    assert answer.text_content() == stopped and len(stopped) > first

    # Reload: the conversation is still there, in the list and on screen.
    page.reload()
    expect(page.locator("#conversations li")).to_have_count(1)
    expect(page.locator(".message.user .content")).to_have_text("Write a very long story about a dragon and a knight.")
    expect(page.locator(".message.assistant .content")).to_contain_text(stopped.strip()[:40])

    # A new chat whose answer holds HTML: it shows as text, nothing runs.
    page.click("#new-chat")
    set_setting(page, "temperature", "0")
    page.fill("#prompt", f"Repeat exactly: {XSS}")
    page.click("#send")
    expect(page.locator("#send")).to_be_visible(timeout=60_000)
    expect(page.locator(".message.assistant .content").last).to_contain_text(XSS)
    assert page.locator("#messages img").count() == 0
    expect(page.locator("#conversations li")).to_have_count(2)

    assert dialogs == [("prompt", "This server needs an API key:")]  # asked once, no alert ran
    page.close()


def test_answers_are_rendered_as_markdown(server, browser):
    answer = "**bold** and a table:\n\n| a | b |\n|---|---|\n| *1* | 2 |\n\n```\ncode <b>x</b>\n```"
    stored = [{"id": "1", "title": "md", "messages": [{"role": "user", "content": "show me"},
                                                     {"role": "assistant", "content": answer}]}]
    # The key and a conversation in localStorage before the page's script runs, as a returning
    # user has them: no 401 and key prompt racing a reload.
    context = browser.new_context()
    context.add_init_script(f"localStorage.setItem('nanosmol.apiKey', {json.dumps(KEY)});"
                            f" localStorage.setItem('nanosmol.conversations', {json.dumps(json.dumps(stored))});")
    page = context.new_page()
    page.goto(server.url + "/")
    content = page.locator(".message.assistant .content")
    expect(content.locator("strong")).to_have_text("bold")
    expect(content.locator("table td em")).to_have_text("1")
    expect(content.locator("pre code")).to_have_text("code <b>x</b>\n")
    assert content.locator("b").count() == 0
    context.close()
