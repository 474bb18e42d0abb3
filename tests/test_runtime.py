import platform

import pytest
import torch

from mmbyol import runtime


@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_is_bf16_only_where_the_cpu_has_it_natively(monkeypatch, native):
    cpu = torch.device("cpu")
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert runtime.resolve_precision("auto", cpu) == ("bf16" if native else "fp32")
    assert runtime.resolve_precision("fp32", cpu) == "fp32"  # what is asked for explicitly is kept
    assert runtime.resolve_precision("bf16", cpu) == "bf16"
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported")  # a torch without the private probes
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported")
    assert runtime.resolve_precision("auto", cpu) == "fp32"


def mapped_bytes() -> int:
    """glibc's count of the bytes malloc holds in mappings of their own (``mallinfo2().hblkhd``)."""
    import ctypes

    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                         "fsmblks", "uordblks", "fordblks", "keepcost")]

    mallinfo2 = ctypes.CDLL(None).mallinfo2
    mallinfo2.restype = MallInfo2
    return mallinfo2().hblkhd


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc")
def test_cpu_runs_take_large_tensors_from_the_heap_not_from_mappings_of_their_own():
    assert not runtime.keep_freed_memory(torch.device("cuda"))  # GPU runs leave the host's malloc alone
    before = mapped_bytes()
    assert runtime.resolve_device("cpu") == torch.device("cpu")  # what train, eval and views call
    assert runtime.keep_freed_memory(torch.device("cpu"))
    # 64 MB, as big as a step's activations: glibc would map it afresh (and unmap it when freed,
    # so the next step faults its pages in again); now it comes from the heap, which keeps it
    activations = torch.ones(16 * 2**20)
    assert mapped_bytes() - before < activations.nbytes
