"""The heap policy (`dupmae_eval.runtime.heap`): freed activation-sized tensors go back to the system under
`release` and stay resident under glibc's default, the difference `train_and_save` relies on."""

import json
import subprocess
import sys

import pytest

from dupmae_eval.errors import DupMAEEvalError
from dupmae_eval.runtime.heap import HEAPS, _glibc, use_heap

# Each case runs in a fresh interpreter: a policy, once applied, lasts for the process.
_SCENARIO = r"""
import json, sys
import torch
from dupmae_eval.runtime.heap import use_heap

def resident_mb():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS")) / 1024

applied = use_heap(sys.argv[1])
torch.ones(4 << 20).sum()          # a 16 MiB tensor freed: glibc's threshold rises to 16 MiB (mapped before)
before = resident_mb()
blocks = [torch.ones(2 << 20) for _ in range(40)]      # 40 activations of 8 MiB, written
kept = blocks.pop()                                    # the newest stays alive (as the next layer's would)
del blocks                                             # 39 x 8 MiB = 312 MiB freed
print(json.dumps({"applied": applied, "resident_after_free_mb": resident_mb() - before}))
"""


def _run(policy: str) -> dict:
    done = subprocess.run([sys.executable, "-c", _SCENARIO, policy], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(_glibc() is None, reason="the threshold is glibc's (Linux with glibc only)")
def test_release_gives_freed_tensors_back_and_glibc_keeps_them():
    """39 freed 8 MiB tensors below a live one: glibc's default heap keeps the 312 MiB resident (it can
    only trim its top), `release` maps each tensor on its own and unmaps it on free."""
    kept, released = _run("glibc"), _run("release")
    assert kept["applied"] is False and released["applied"] is True
    assert kept["resident_after_free_mb"] > 250          # the default: freed memory stays (8 MiB live)
    assert released["resident_after_free_mb"] < 40       # release: about the one live tensor


def test_unknown_policy_is_refused_naming_the_choices():
    with pytest.raises(DupMAEEvalError, match="unknown heap policy 'jemalloc'; choose one of glibc, release"):
        use_heap("jemalloc")
    assert list(HEAPS) == ["glibc", "release"]
