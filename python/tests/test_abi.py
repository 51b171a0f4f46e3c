"""The ctypes mirrors of the public structs have the C compiler's layout
(tests/py_abi_layout.c prints sizeof/offsetof of each)."""
import json
import os
import subprocess

import pytest
from conftest import BUILD

from dinoscope import _lib


def test_every_mirrored_struct_has_the_c_size_and_field_offsets():
    exe = os.path.join(BUILD, "py_abi_layout")
    if not os.path.exists(exe):
        pytest.skip("py_abi_layout not built")
    layout = json.loads(subprocess.run([exe], check=True, capture_output=True, text=True).stdout)
    assert set(layout) == set(_lib.STRUCTS)
    for name, c in layout.items():
        py = _lib.STRUCTS[name]
        assert [f[0] for f in py._fields_] == list(c["fields"]), name
        for field, off in c["fields"].items():
            assert getattr(py, field).offset == off, "%s.%s" % (name, field)
        assert __import__("ctypes").sizeof(py) == c["size"], name
