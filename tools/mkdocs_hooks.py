"""MkDocs hook: the docstrings' Sphinx cross-reference roles (``:class:`~x.Y```) read as code."""

from __future__ import annotations

import re

_ROLE = re.compile(r":(?:class|func|meth|attr|data|mod|exc|obj):<code>~?([^<]*)</code>")


def on_post_page(output: str, **_: object) -> str:
    """Drop the role names and keep the target, as its last dotted part when it began with ``~``."""

    def code(match: re.Match[str]) -> str:
        target = match[1]
        if match[0].split("<code>", 1)[1].startswith("~"):
            target = target.rsplit(".", 1)[-1]
        return f"<code>{target}</code>"

    return _ROLE.sub(code, output)
