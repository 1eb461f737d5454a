#!/usr/bin/env python3
# Reads a page `kinot report --html` wrote, with Python's own HTML parser
# (html.parser: no dependency), strictly: every element but the void ones
# closed, in order. Prints one JSON object for spec/report_html_spec.lua:
# the structural errors, the elements by name, the figures (data-figure),
# the charts' bars and segments as drawn, every attribute value, the text,
# and the inline CSS.
import json
import sys
from html.parser import HTMLParser

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class Page(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack, self.errors, self.tags, self.figures = [], [], {}, {}
        self.bars, self.segs, self.attrs, self.text, self.css = [], [], [], [], []
        self.figure, self.svg, self.row, self.doctype = None, None, None, False

    def handle_decl(self, decl):
        self.doctype = self.doctype or decl.lower() == "doctype html"

    def element(self, tag, attrs, closed):
        self.tags[tag] = self.tags.get(tag, 0) + 1
        a = dict(attrs)
        for k, v in attrs:
            self.attrs.append([tag, k, v if v is not None else ""])
        if tag == "svg":
            self.svg = a.get("class", "")
        if tag == "g" and "row" in a.get("class", "").split():
            self.row = a.get("data-label")
        if tag == "rect" and "bar" in a.get("class", "").split():
            self.bars.append({"chart": self.svg, "label": a.get("data-label"), "count": int(a["data-count"]),
                              "height": float(a["height"]), "y": float(a["y"]), "width": float(a["width"])})
        if tag == "rect" and "seg" in a.get("class", "").split():
            self.segs.append({"chart": self.svg, "row": self.row, "part": a.get("data-part"),
                              "count": int(a["data-count"]), "width": float(a["width"])})
        if "data-figure" in a:
            self.figure = [a["data-figure"], ""]
        if not closed and tag not in VOID:
            self.stack.append(tag)

    def handle_starttag(self, tag, attrs):
        self.element(tag, attrs, False)

    def handle_startendtag(self, tag, attrs):
        self.element(tag, attrs, True)

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append("</%s> closes <%s> at %d:%d" % (tag, self.stack[-1] if self.stack else "nothing",
                                                                *self.getpos()))
            if tag in self.stack:
                while self.stack and self.stack.pop() != tag:
                    pass
            return
        self.stack.pop()
        if self.figure is not None and tag in ("span", "code"):
            self.figures[self.figure[0]] = self.figure[1]
            self.figure = None
        if tag == "svg":
            self.svg = None
        if tag == "g":
            self.row = None

    def handle_data(self, data):
        if self.stack and self.stack[-1] == "style":
            self.css.append(data)
            return
        self.text.append(data)
        if self.figure is not None:
            self.figure[1] += data


with open(sys.argv[1], "rb") as f:
    raw = f.read()
page = Page()
try:
    page.feed(raw.decode("utf-8"))
    page.close()
except UnicodeDecodeError as e:
    page.errors.append("not UTF-8: %s" % e)
if page.stack:
    page.errors.append("never closed: " + ", ".join(page.stack))
if not page.doctype:
    page.errors.append("no <!DOCTYPE html>")
print(json.dumps({"errors": page.errors, "tags": page.tags, "figures": page.figures, "bars": page.bars,
                  "segs": page.segs, "attrs": page.attrs, "text": "".join(page.text), "css": "".join(page.css)}))
