"""Two real ranks under the ``deepspeed`` launcher leave nothing in /dev/shm (zhyper.training.session.init_distributed).

DeepSpeed's CPU all-reduce creates a 69 MB shared-memory segment per rank and never unlinks it;
before this was handled, a day of test runs on one machine filled /dev/shm (RAM) with 20 GB and
the kernel killed the test run for memory.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.training.test_train_deepspeed import DEEPSPEED, _env, _free_port

pytestmark = pytest.mark.slow

RANK = """
import sys
import torch.distributed as dist
if sys.argv[-1] == "zhyper":  # the launcher puts --local_rank first
    from zhyper.training.session import init_distributed
    init_distributed("gloo")
else:
    import deepspeed
    deepspeed.init_distributed(dist_backend="gloo")
dist.all_reduce(t := __import__("torch").ones(3))  # the group works after the names are gone
assert t.tolist() == [2.0, 2.0, 2.0], t
dist.barrier()
dist.destroy_process_group()
"""


def _two_ranks(tmp_path: Path, how: str) -> list[Path]:
    script = tmp_path / "rank.py"
    script.write_text(RANK)
    port = _free_port()
    # plain DeepSpeed JIT-builds its shm op: in this environment's own folder, not the user's ~/.cache
    env = dict(_env(tmp_path), TORCH_EXTENSIONS_DIR=str(Path(sys.prefix) / "torch_extensions"))
    proc = subprocess.run([DEEPSPEED, "--num_gpus", "2", "--master_port", str(port), str(script), how], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return sorted(Path("/dev/shm").glob(f"deepspeed_allreduce_buffer_*_{port}_*"))


@pytest.mark.skipif(not Path("/dev/shm").is_dir(), reason="no /dev/shm on this system")
def test_two_ranks_leave_no_shared_memory_behind(tmp_path):
    assert _two_ranks(tmp_path, "zhyper") == []


@pytest.mark.skipif(not Path("/dev/shm").is_dir(), reason="no /dev/shm on this system")
def test_twin_plain_deepspeed_leaves_a_segment_per_rank(tmp_path):
    left = _two_ranks(tmp_path, "deepspeed")
    try:
        assert [p.name[-2:] for p in left] == ["_0", "_1"]
        assert all(p.stat().st_size > 1 << 20 for p in left)
    finally:
        for p in left:  # this test's own segments
            p.unlink(missing_ok=True)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
