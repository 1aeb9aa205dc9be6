import os

import torch

# Under pytest-xdist the cores are shared by the workers: one intra-op thread each (more would oversubscribe).
_workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
torch.set_num_threads(max(1, min(2, (os.cpu_count() or 1) // _workers)))
