"""libbpf through ctypes: the only module that names its functions (``relay/xdp/__init__.py`` says why libbpf).

The functions are libbpf 1.x's stable API (``libbpf.so.1``, Debian's ``libbpf1``); ``tests/test_relay_xdp.py``
checks they are all there, so an upgrade that moves one fails a test instead of a relay.
"""

from __future__ import annotations

import ctypes
import ctypes.util

_LIB = None

SIGNATURES = {
    "bpf_object__open_file": (ctypes.c_void_p, [ctypes.c_char_p, ctypes.c_void_p]),
    "bpf_object__load": (ctypes.c_int, [ctypes.c_void_p]),
    "bpf_object__close": (None, [ctypes.c_void_p]),
    "bpf_object__find_program_by_name": (ctypes.c_void_p, [ctypes.c_void_p, ctypes.c_char_p]),
    "bpf_object__find_map_by_name": (ctypes.c_void_p, [ctypes.c_void_p, ctypes.c_char_p]),
    "bpf_program__fd": (ctypes.c_int, [ctypes.c_void_p]),
    "bpf_map__fd": (ctypes.c_int, [ctypes.c_void_p]),
    "bpf_xdp_attach": (ctypes.c_int, [ctypes.c_int, ctypes.c_int, ctypes.c_uint32, ctypes.c_void_p]),
    "bpf_xdp_detach": (ctypes.c_int, [ctypes.c_int, ctypes.c_uint32, ctypes.c_void_p]),
    "bpf_map_update_elem": (ctypes.c_int, [ctypes.c_int, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_uint64]),
    "bpf_map_lookup_elem": (ctypes.c_int, [ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p]),
    "bpf_map_delete_elem": (ctypes.c_int, [ctypes.c_int, ctypes.c_char_p]),
    "bpf_map_get_next_key": (ctypes.c_int, [ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p]),
    "libbpf_num_possible_cpus": (ctypes.c_int, []),
}


def libbpf():
    """libbpf.so.1 with its signatures declared (XdpUnavailable if it is not installed)."""
    global _LIB
    if _LIB is None:
        from . import XdpUnavailable

        name = ctypes.util.find_library("bpf") or "libbpf.so.1"
        try:
            lib = ctypes.CDLL(name, use_errno=True)
        except OSError as exc:
            raise XdpUnavailable(f"libbpf is not installed (Debian: libbpf1): {exc}") from None
        for fn, (restype, argtypes) in SIGNATURES.items():
            f = getattr(lib, fn)
            f.restype, f.argtypes = restype, argtypes
        _LIB = lib
    return _LIB
