"""Markdown to HTML for the web page, with raw HTML off: model output never becomes markup of its own."""

from __future__ import annotations

from markdown_it import MarkdownIt

# CommonMark plus tables and strikethrough. html=False escapes any tag the text contains;
# markdown-it's link validation drops javascript:, vbscript: and file: URLs.
_md = MarkdownIt("commonmark", {"html": False}).enable(["table", "strikethrough"])


def render_markdown(text: str) -> str:
    return _md.render(text)
