"""One fresh-process measurement, printed as a JSON line on stdout; bench/run.py starts this script.

    child.py import STATEMENT          time to execute STATEMENT (e.g. "import torch")
    child.py load LIB FOLDER           AutoModel.from_pretrained(FOLDER) wall time; torch and LIB imported first
    child.py firstuse LIB FOLDER       import LIB + from_pretrained + one 1x8 forward: what a script waits for
                                       (also times that first forward and a second one: first_ms, second_ms)
    child.py read FILE...              read the files into a preallocated buffer (from the page cache)
    child.py torch                     RSS of a process that imported torch and nothing else

Every mode reports `seconds` (except torch) and `peak_rss_mb`, the process's peak resident set (VmHWM), which
includes the interpreter and everything imported.
"""
from __future__ import annotations

import json
import os
import resource
import sys
import time


def peak_rss_mb() -> float:
    """The process's peak resident set (VmHWM). Not getrusage's ru_maxrss: Linux carries that across fork and
    exec, so a child of the (large) benchmark process would report its parent's peak."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024  # KiB
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def auto_model(lib: str):
    if lib == "pretrained":
        from pretrained import AutoModel
    else:
        from transformers import AutoModel
    return AutoModel


def main(argv: list[str]) -> dict:
    mode, args = argv[0], argv[1:]
    if mode == "import":
        t0 = time.perf_counter()
        exec(args[0], {})
        seconds = time.perf_counter() - t0
        return {"seconds": seconds, "torch_imported": "torch" in sys.modules, "peak_rss_mb": peak_rss_mb()}
    if mode == "torch":
        import torch  # noqa: F401
        return {"peak_rss_mb": peak_rss_mb()}
    if mode == "read":
        sizes = [os.path.getsize(p) for p in args]
        buffer = bytearray(max(sizes))
        t0 = time.perf_counter()
        for path, size in zip(args, sizes):
            with open(path, "rb", buffering=0) as f:
                view = memoryview(buffer)[:size]
                while view:
                    view = view[f.readinto(view):]
        seconds = time.perf_counter() - t0
        return {"seconds": seconds, "bytes": sum(sizes), "peak_rss_mb": peak_rss_mb()}
    if mode == "load":
        lib, folder = args
        import torch
        torch.set_num_threads(2)
        AutoModel = auto_model(lib)
        rss_before = peak_rss_mb()
        t0 = time.perf_counter()
        model = AutoModel.from_pretrained(folder)
        seconds = time.perf_counter() - t0
        return {"seconds": seconds, "peak_rss_mb": peak_rss_mb(), "rss_before_mb": rss_before,
                "class": type(model).__name__}
    if mode == "firstuse":
        lib, folder = args
        t0 = time.perf_counter()
        import torch
        torch.set_num_threads(2)
        model = auto_model(lib).from_pretrained(folder)
        inputs = dict(input_ids=torch.full((1, 8), 1000), attention_mask=torch.ones(1, 8, dtype=torch.long))
        with torch.inference_mode():
            t1 = time.perf_counter()
            model(**inputs)
            first = time.perf_counter() - t1
        seconds = time.perf_counter() - t0
        rss = peak_rss_mb()
        with torch.inference_mode():  # the second forward, timed after the figures above are taken
            t2 = time.perf_counter()
            model(**inputs)
            second = time.perf_counter() - t2
        return {"seconds": seconds, "peak_rss_mb": rss, "first_ms": first * 1e3, "second_ms": second * 1e3}
    raise SystemExit(f"unknown mode {mode!r}; see the docstring of {__file__}")


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:])))
