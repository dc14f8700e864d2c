"""Reads a report page with the standard library's HTML parser: which elements, where.

Why not regexes: a point must be counted in the chart it belongs to, so each element is
recorded with the ids of the elements around it.
"""

from __future__ import annotations

from dataclasses import dataclass
from html.parser import HTMLParser

VOID = {"img", "br", "meta", "input", "hr", "link"}


@dataclass
class Element:
    tag: str
    attrs: dict[str, str]
    inside: tuple[str, ...]  # ids of the enclosing elements, outermost first

    @property
    def classes(self) -> set[str]:
        return set(self.attrs.get("class", "").split())


class _Outline(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.elements: list[Element] = []
        self._stack: list[tuple[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        self.elements.append(Element(tag, values, tuple(i for _, i in self._stack if i)))
        if tag not in VOID:
            self._stack.append((tag, values.get("id", "")))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append(Element(tag, {k: v or "" for k, v in attrs}, tuple(i for _, i in self._stack if i)))

    def handle_endtag(self, tag: str) -> None:
        while self._stack:
            if self._stack.pop()[0] == tag:
                break


def outline(page: str) -> list[Element]:
    parser = _Outline()
    parser.feed(page)
    return parser.elements


def points_in(elements: list[Element], chart_id: str) -> list[Element]:
    """The plotted points of the chart with this id."""
    return [e for e in elements if e.tag == "circle" and "point" in e.classes and chart_id in e.inside]


def ids(elements: list[Element]) -> set[str]:
    return {e.attrs["id"] for e in elements if "id" in e.attrs}
