"""skild_base.memory: the allocator setting every `skild-phys` command runs with."""

import platform
import subprocess
import sys

import pytest

from skild_base.memory import keep_freed_memory


def test_opt_out_leaves_malloc_alone(monkeypatch):
    monkeypatch.setenv("SKILD_PHYS_KEEP_FREED_MEMORY", "0")
    assert keep_freed_memory() is False


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_applied_on_glibc_and_numerics_unchanged():
    # in a fresh process, so this test process keeps malloc's defaults: the same float32 work
    # (large enough to be mmap'd by default) before and after the setting gives identical bytes
    code = ("import numpy as np; from skild_base.memory import keep_freed_memory\n"
            "def work():\n"
            "    rng = np.random.default_rng(0); a = rng.standard_normal((2048, 4096), dtype=np.float32)\n"
            "    return (a @ a[:1024].T).tobytes()\n"
            "before = work(); applied = keep_freed_memory(); after = work()\n"
            "print(applied, before == after)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["True", "True"]
