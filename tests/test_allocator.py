"""`keep_freed_memory`: glibc reuses freed blocks instead of page-faulting fresh ones; the command line turns it
on for its own process unless MMNET_KEEP_FREED_MEMORY=0."""

import os
import platform
import subprocess
import sys
import textwrap

import pytest

import mmnet
from mmnet import allocator, cli
from mmnet.errors import InputError
from mmnet.train import cli as train_cli

GLIBC = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"

# Page faults of each keypoint transfer after a warm-up call (Lite0, random weights, 224 x 320).
FAULTS = textwrap.dedent(
    """
    import resource, sys
    from mmnet import keep_freed_memory
    if sys.argv[1] == "keep":
        assert keep_freed_memory()
    import torch, mmnet
    torch.manual_seed(0)
    matcher = mmnet.Matcher(mmnet.create_model("mmnet_efficientnet_lite0"), device="cpu", input_size=(224, 320))
    src, tgt, points = torch.rand(3, 224, 320), torch.rand(3, 224, 320), torch.rand(20, 2) * 200
    faults = []
    with torch.inference_mode():
        matcher.match(src, tgt, points)
        for _ in range(4):
            start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            matcher.match(src, tgt, points)
            faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start)
    print(*faults)
    """
)


def _faults(mode: str) -> list[int]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", FAULTS, mode], capture_output=True, text=True, check=True, env=env)
    return [int(n) for n in out.stdout.split()]


@pytest.mark.skipif(not GLIBC, reason="keep_freed_memory changes glibc's malloc only")
def test_keypoint_transfer_stops_page_faulting_once_memory_is_kept():
    default, kept = _faults("default"), _faults("keep")
    assert min(kept[1:]) <= 100 < sorted(default)[1], (default, kept)


def test_other_c_libraries_are_left_alone(monkeypatch):
    monkeypatch.setattr(platform, "libc_ver", lambda: ("", ""))
    assert mmnet.keep_freed_memory() is False


@pytest.mark.parametrize(("name", "value"), [("mmap_threshold_mib", 0), ("trim_threshold_mib", 4096)])
def test_thresholds_are_checked(name, value):
    with pytest.raises(InputError, match=rf"{name} must be an integer in \[1, 2047\], got {value}"):
        mmnet.keep_freed_memory(**{name: value})


@pytest.mark.parametrize(("env", "calls"), [(None, 1), ("0", 0), ("1", 1)])
def test_the_command_lines_keep_freed_memory_unless_told_not_to(monkeypatch, capsys, env, calls):
    seen = []
    monkeypatch.setattr(allocator, "keep_freed_memory", lambda: seen.append(True) or True)
    if env is None:
        monkeypatch.delenv("MMNET_KEEP_FREED_MEMORY", raising=False)
    else:
        monkeypatch.setenv("MMNET_KEEP_FREED_MEMORY", env)
    assert cli.main(["models", "*lite2*"]) == 0
    with pytest.raises(SystemExit):
        train_cli.main(["--help"])  # the fine-tuning examples' entry point
    assert len(seen) == 2 * calls


def test_a_glibc_that_caps_the_mmap_threshold_gets_its_cap(monkeypatch):
    calls = []

    class Mallopt:
        def __call__(self, param, value):
            calls.append((param, value))
            return int(not (param == -3 and value > 32 << 20))  # M_MMAP_THRESHOLD above 32 MiB refused

    class Libc:
        mallopt = Mallopt()

    monkeypatch.setattr(allocator.ctypes, "CDLL", lambda name: Libc())
    monkeypatch.setattr(platform, "libc_ver", lambda: ("glibc", "2.31"))
    monkeypatch.setattr(sys, "platform", "linux")
    assert allocator.keep_freed_memory() is True
    assert calls == [(-3, 256 << 20), (-3, 32 << 20), (-1, 1024 << 20)]
