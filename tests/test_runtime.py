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


@pytest.mark.parametrize("name, message", [
    ("gpu", "device=gpu is not a device: use device=auto, cpu, cuda or cuda:N"),
    ("cuda:x", "device=cuda:x is not a device"),
    ("meta", None),  # a device type torch knows: used if a tensor can be made on it
])
def test_a_device_torch_cannot_use_is_a_config_error(name, message):
    from mmbyol.errors import ConfigError

    if message is None:
        assert runtime.resolve_device(name) == torch.device(name)
        return
    with pytest.raises(ConfigError, match=message):
        runtime.resolve_device(name)


def test_a_backend_this_torch_was_not_built_with_is_a_config_error():
    from mmbyol.errors import ConfigError

    unbuilt = next((t for t in ("mps", "xpu", "hpu") if not _usable(t)), None)
    if unbuilt is None:
        pytest.skip("every backend tried is usable here")
    with pytest.raises(ConfigError, match=f"device={unbuilt} is not available in this PyTorch build"):
        runtime.resolve_device(unbuilt)


def _usable(device_type: str) -> bool:
    try:
        torch.empty(0, device=device_type)
    except (RuntimeError, AssertionError):
        return False
    return True
