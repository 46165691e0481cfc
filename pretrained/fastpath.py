"""The fast CPU path of inference, and exact mode, the one switch that turns it off.

Default mode: on the CPU, with autograd not recording, in float32 or bfloat16, every linear layer runs
oneDNN's inner product on its weight reordered once into oneDNN's blocked layout ("packed"). The packed
kernels sum in another order than the BLAS call transformers makes, so outputs move by summation order only:
at most 1e-4 (max abs, fp32) on real checkpoints, and the same generated tokens (bench/RESULTS.md).

Exact mode computes transformers' bits: `from_pretrained(..., exact=True)` or `model.exact = True` for one
model, `PRETRAINED_EXACT=1` in the environment for every model that did not choose. Whenever autograd records
(gradients enabled and a weight or input requiring grad), the exact path runs whatever the mode.

A packed weight is cached on the Parameter it was made from, keyed on its storage (held weakly), address,
version counter, dtype and shape: an in-place edit under torch.no_grad(), an optimizer step,
load_state_dict, `.to()`, or assigning a new Parameter all change the key, and the next forward repacks.
Writes through `.data` bypass the version counter: call `drop_packs(model)` after them.

Memory: a weight memory-mapped from a safetensors file is paged in to be packed, and then its pages are given
back (madvise DONTNEED; the kernel keeps them in the page cache), so the process holds the packed copy only;
state_dict() and save_pretrained read the file pages again when asked. Pages that were written to
(copy-on-write) are never given back. A weight in anonymous memory (a `.bin` checkpoint, a dtype cast) keeps
its plain copy beside the packed one.
"""
from __future__ import annotations

import ctypes
import logging
import os
import statistics
import sys
import time
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.multiprocessing.reductions import StorageWeakRef

logger = logging.getLogger(__name__)

_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off", "")


def exact_from_environment(environ=os.environ) -> bool:
    """PRETRAINED_EXACT=1 -> exact mode by default. The old PRETRAINED_FAST_LINEAR is still read, with a
    deprecation warning: =1 is now the default, =0 means exact."""
    legacy = environ.get("PRETRAINED_FAST_LINEAR")
    if legacy is not None:
        logger.warning("PRETRAINED_FAST_LINEAR is deprecated and will be removed: the fast path is now the "
                       "default; set PRETRAINED_EXACT=1 for transformers' exact numbers.")
    value = environ.get("PRETRAINED_EXACT")
    if value is None:
        return legacy is not None and legacy.strip() == "0"
    if value.strip().lower() in _TRUE:
        return True
    if value.strip().lower() in _FALSE:
        return False
    raise ValueError(f"PRETRAINED_EXACT={value!r} is not understood; use 1 (exact mode) or 0 (default)")


# The default of every model that did not choose a mode (tests and the benchmark set it directly).
EXACT: bool = exact_from_environment()
ONEDNN_AVAILABLE: bool = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")
# Rows per call oneDNN is told to expect when it picks the blocked layout. Measured on an AVX-512 EPYC: packs
# made for 1 row are 1.5x slower at 8 rows, packs made without a hint 1.8x slower at 1 row; 128 is within
# noise of the best pack at 1, 8, 128 and 1024 rows.
PACK_ROWS = 128
_FAST_DTYPES = (torch.float32, torch.bfloat16)
# The checks below run on every linear call: the C functions behind torch.backends.mkldnn.enabled and
# StorageWeakRef.expired() cost about a quarter of their Python wrappers (~0.3-0.4 us each).
_mkldnn_enabled = getattr(torch._C, "_get_mkldnn_enabled", lambda: torch.backends.mkldnn.enabled)
_expired = torch.UntypedStorage._expired


# One row per call (decoding at batch 1) is a matrix-vector product, bound by reading the weight. Which kernel
# reads fastest depends on the CPU: on an Intel Xeon (AVX-512, no BF16) MKL's gemv on the plain weight took
# 0.5-0.9x the time of oneDNN's packed kernel (GPT-2 and Qwen2.5-0.5B shapes), on an AMD EPYC the packed kernel
# was faster (MKL's gemv read 12-13 GB/s there against oneDNN's 17-20). So it is measured, once per process and
# dtype, when from_pretrained warms up a model that generates (modeling.warm_up): from then on one-row calls
# in that dtype go through F.linear on the plain weight (transformers' bits) where that was faster by the
# margin below. Both answers are within the contract; only the speed differs. Until a measurement (a model
# that does not generate, or one built from a config), one-row calls take the packed kernel.
_ROW_PLAIN: dict[torch.dtype, bool] = {}  # whether one-row calls use the plain weight
_ROW_MARGIN = 0.9  # plain must take at most this share of the packed kernel's time


def single_row_plain(dtype: torch.dtype) -> bool:
    """Whether a one-row call in `dtype` runs F.linear on the plain weight rather than the packed kernel:
    measured on the first call for each dtype (~20-30 ms), then remembered for the process."""
    choice = _ROW_PLAIN.get(dtype)
    if choice is None:
        choice = ONEDNN_AVAILABLE and dtype in _FAST_DTYPES and _measure_single_row(dtype)
        _ROW_PLAIN[dtype] = choice
    return choice


def _measure_single_row(dtype: torch.dtype, repeats: int = 9) -> bool:
    """Time both kernels on one row and two weight shapes of a small decoder (1024x1024 and 4096x1024), the
    two alternating; True when the plain weight's median total is below _ROW_MARGIN of the packed one's."""
    with torch.inference_mode():
        weights = [torch.full((n, 1024), 0.01, dtype=dtype) for n in (1024, 4096)]
        packs = [torch.ops.mkldnn._reorder_linear_weight(w, PACK_ROWS) for w in weights]
        x = torch.full((1, 1024), 0.5, dtype=dtype)
        plain, packed = [], []
        for i in range(repeats + 2):
            start = time.perf_counter()
            for w in weights:
                F.linear(x, w)
            middle = time.perf_counter()
            for p in packs:
                torch.ops.mkldnn._linear_pointwise(x, p, None, "none", [], "")
            end = time.perf_counter()
            if i >= 2:  # the first two build the kernels
                plain.append(middle - start)
                packed.append(end - middle)
    choice = statistics.median(plain) < _ROW_MARGIN * statistics.median(packed)
    logger.debug("single-row calls in %s: plain %.0f us, packed %.0f us -> %s", dtype,
                 1e6 * statistics.median(plain), 1e6 * statistics.median(packed), "plain" if choice else "packed")
    return choice


def fast_applies(x: Tensor, weight: Tensor, exact: Optional[bool] = None) -> bool:
    """Whether a linear layer on `x` takes the packed path: not exact mode (`exact`, else the default EXACT),
    oneDNN present and enabled, CPU, float32/bfloat16 throughout, not one row where this CPU measured the plain
    weight faster (single_row_plain), and autograd not recording."""
    if (EXACT if exact is None else exact) or not ONEDNN_AVAILABLE or not _mkldnn_enabled():
        return False
    if not x.is_cpu or x.dtype not in _FAST_DTYPES or weight.dtype != x.dtype:
        return False
    if _ROW_PLAIN.get(x.dtype) and x.numel() == x.shape[-1] != 0:
        return False  # one row (decoding at batch 1) on a CPU whose BLAS does it faster on the plain weight
    return not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad))


class _Pack:
    """A weight (or, for a group, several weights side by side, and their biases) in oneDNN's blocked layout and
    the key of the tensors it was made from. Copies and pickles of a model carry an empty one (an opaque oneDNN
    tensor can be neither), so they repack on first use."""

    __slots__ = ("key", "storage", "tensor", "bias")

    def __init__(self, key=None, storage=None, tensor=None, bias=None):
        self.key, self.storage, self.tensor, self.bias = key, storage, tensor, bias

    def __reduce__(self):
        return _Pack, ()

    def __deepcopy__(self, memo):
        return _Pack()


def _version(t: Tensor) -> int:
    try:
        return t._version
    except RuntimeError:  # an inference tensor has no version counter (and cannot be edited outside inference mode)
        return -1


def _key(t: Optional[Tensor]) -> Optional[tuple]:
    """What identifies a tensor as it is now: storage address, version counter, dtype, shape."""
    return None if t is None else (t.data_ptr(), _version(t), t.dtype, t.shape)


def _current(weight: Tensor, transposed: bool) -> tuple[tuple, Optional[_Pack]]:
    """(the key `weight` has now, its pack if that pack was made from exactly this tensor as it is now)."""
    key = _key(weight) + (transposed,)
    pack = weight.__dict__.get("_pretrained_pack")
    fresh = pack is not None and pack.key == key and not _expired(pack.storage.cdata)
    return key, pack if fresh else None


def packed_weight(weight: Tensor, transposed: bool = False) -> Tensor:
    """`weight` (out, in), or `weight.t()` when `transposed` (GPT-2's Conv1D keeps (in, out)), in oneDNN's
    blocked layout: made on first use and whenever the weight has changed since, then reused."""
    key, pack = _current(weight, transposed)
    if pack is not None:
        return pack.tensor
    populate(weight)  # one call maps every page of a memory-mapped weight, rather than one fault per page
    with torch.no_grad():
        plain = weight.detach().t() if transposed else weight.detach()
        tensor = torch.ops.mkldnn._reorder_linear_weight(plain, PACK_ROWS)
    weight.__dict__["_pretrained_pack"] = _Pack(key, StorageWeakRef(weight.untyped_storage()), tensor)
    release_file_pages(weight)
    return tensor


def packed_group(owner: nn.Module, name: str, weights: list[Tensor],
                 biases: list[Optional[Tensor]]) -> tuple[Tensor, Optional[Tensor]]:
    """Several weights (out_i, in) of layers that read the same input, packed as one (sum out_i, in) weight, and
    their biases concatenated (None when they have none): one oneDNN call computes all their outputs. Kept on
    `owner` under `name`, keyed on every weight and bias, remade when any of them changes. The layers' own packs
    are dropped, so the process holds each weight once."""
    pack = _current_group(owner, name, weights + biases)
    if pack is not None:
        return pack.tensor, pack.bias
    drop_group(owner, name)  # free a stale pack before making its successor
    with torch.no_grad():
        for w in weights:
            drop_pack(w)
            populate(w)
        plain = torch.cat([w.detach() for w in weights])
        tensor = torch.ops.mkldnn._reorder_linear_weight(plain, PACK_ROWS)
        del plain
        bias = None if biases[0] is None else torch.cat([b.detach() for b in biases])
    refs = tuple(StorageWeakRef(t.untyped_storage()) for t in weights + biases if t is not None)
    owner.__dict__[_GROUP + name] = _Pack(tuple(_key(t) for t in weights + biases), refs, tensor, bias)
    for w in weights:
        release_file_pages(w)
    return tensor, bias


_GROUP = "_pretrained_pack_"  # + the group's name: where a group's pack is kept on its owner module


def _current_group(owner: nn.Module, name: str, tensors: list[Optional[Tensor]]) -> Optional[_Pack]:
    """The pack of group `name` if it was made from exactly `tensors` (weights, then biases) as they are now."""
    pack = owner.__dict__.get(_GROUP + name)
    fresh = pack is not None and pack.key == tuple([_key(t) for t in tensors]) and \
        not any([_expired(ref.cdata) for ref in pack.storage])
    return pack if fresh else None


def drop_group(owner: nn.Module, name: str) -> None:
    owner.__dict__.pop(_GROUP + name, None)


def has_pack(weight: Tensor) -> bool:
    pack = weight.__dict__.get("_pretrained_pack")
    return pack is not None and pack.tensor is not None


def drop_pack(weight: Tensor) -> None:
    weight.__dict__.pop("_pretrained_pack", None)


def drop_packs(module: nn.Module, stale_only: bool = False) -> None:
    """Forget the packed weights of `module` (they are remade on the next fast forward); with `stale_only`, only
    those whose weight has changed since (after `.to()`, so that the old packs do not hold memory)."""
    for p in module.parameters():
        pack = p.__dict__.get("_pretrained_pack")
        if pack is not None and not (stale_only and pack.key is not None and _current(p, pack.key[-1])[1]):
            drop_pack(p)
    for m in module.modules():  # packed groups (layers.FusedLinears): a stale one has a weight moved or edited
        groups = m.fused_groups() if hasattr(m, "fused_groups") else {}
        for name in [a[len(_GROUP):] for a in m.__dict__ if a.startswith(_GROUP)]:
            members = groups.get(name)
            if not stale_only or members is None or _current_group(
                    m, name, [layer.weight for layer in members] + [layer.bias for layer in members]) is None:
                drop_group(m, name)


# -- pages of memory-mapped weights -----------------------------------------------------------------------------
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_MADV_DONTNEED, _MADV_POPULATE_READ = 4, 22
_libc = None
if sys.platform.startswith("linux"):
    try:
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    except (OSError, AttributeError):
        _libc = None


def _page_range(t: Tensor, inward: bool) -> tuple[int, int]:
    """The pages a contiguous tensor's bytes lie on: only those wholly inside it when `inward`."""
    start = t.data_ptr()
    end = start + t.numel() * t.element_size()
    if inward:
        return -(-start // _PAGE) * _PAGE, end // _PAGE * _PAGE
    return start // _PAGE * _PAGE, -(-end // _PAGE) * _PAGE


def _only_clean_file_pages(lo: int, hi: int) -> bool:
    """Whether every resident page of [lo, hi) is a file page (or shared memory) of this process, so that
    dropping it loses nothing: /proc/self/pagemap bit 61. A copy-on-write page of a private file mapping, or
    any ordinary heap page, is anonymous (bit 61 clear); a swapped page (bit 62) is never file-backed here."""
    n = (hi - lo) // _PAGE
    try:
        with open("/proc/self/pagemap", "rb", buffering=0) as f:
            f.seek(lo // _PAGE * 8)
            raw = f.read(8 * n)
    except OSError:
        return False
    if len(raw) != 8 * n:
        return False
    entries = torch.frombuffer(bytearray(raw), dtype=torch.int64)
    present = (entries >> 63) & 1 == 1  # bit 63 is the sign bit of an int64
    swapped = (entries >> 62) & 1 == 1
    file_page = (entries >> 61) & 1 == 1
    return not bool((swapped | (present & ~file_page)).any())


def release_file_pages(t: Tensor) -> int:
    """Give back the pages of `t` when they are clean pages of a memory-mapped file (its values stay readable:
    the next read faults them in from the page cache). Returns the bytes given back (0 when nothing was)."""
    if _libc is None or t.device.type != "cpu" or not t.is_contiguous() or t.numel() * t.element_size() < 16 * _PAGE:
        return 0
    lo, hi = _page_range(t, inward=True)
    if hi <= lo or not _only_clean_file_pages(lo, hi):
        return 0
    if _libc.madvise(ctypes.c_void_p(lo), hi - lo, _MADV_DONTNEED) != 0:
        return 0
    return hi - lo


def populate(t: Tensor) -> None:
    """Map the pages of `t` into the process now (MADV_POPULATE_READ), instead of one fault per page inside
    the first forward. Fills the page cache from disk first if the file is not there yet."""
    if _libc is None or t.device.type != "cpu" or not t.is_contiguous() or t.numel() == 0:
        return
    lo, hi = _page_range(t, inward=False)
    _libc.madvise(ctypes.c_void_p(lo), hi - lo, _MADV_POPULATE_READ)  # fails harmlessly on kernels < 5.14


def prepare_for_inference(model: nn.Module) -> None:
    """Make the first forward cost what the second does: pack every linear weight now (default mode), and map
    the pages of the other weights (all of them in exact mode) into the process."""
    packed: set[int] = set()
    for module in model.modules():  # parents first: a layer packed in its parent's group is not packed again
        prepack_groups = getattr(module, "prepack_groups", None)  # layers.FusedLinears
        if callable(prepack_groups):
            packed.update(id(w) for w in prepack_groups())
        prepack = getattr(module, "prepack", None)
        weight = getattr(module, "weight", None)
        if callable(prepack) and not (isinstance(weight, Tensor) and id(weight) in packed) and prepack():
            packed.add(id(weight))
    for tensor in list(model.parameters()) + list(model.buffers()):
        if id(tensor) not in packed:
            populate(tensor)
