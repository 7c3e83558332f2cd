"""The largest value every number of the formats may take, and the size of a document.

Each limit is far above any real cluster (physics) and low enough that what the planner builds
from it stays exact: CP-SAT works in int64, and its objective adds up milli-GPU x kind weight x
(priorityBase + priority) over every pod. One pod is worth at most
256,000 x 1,000 x (10^9 + 2^31) < 2^60; snapshot_value_problem bounds the sum.
"""

from __future__ import annotations

# A node: the largest machines hold 8 to 16 GPUs; 256 leaves room for any future one.
MAX_GPUS_PER_NODE = 256
MAX_CPU_MILLI = 10**8  # 100,000 cores
MAX_MEMORY_MIB = 2**30  # 1 PiB
MAX_RESOURCE = 2**53  # any other resource, in its base unit (bytes: 8 PiB)
MAX_GPU_WATTS = 5_000  # one GPU's TDP; the largest today draw about 1,200 W
MAX_BUDGET_WATTS = 10**13  # 10 TW: more than the world's generating capacity

# Kubernetes' own range for a pod's priority (int32).
MIN_PRIORITY = -(2**31)
MAX_PRIORITY = 2**31 - 1
MAX_PRIORITY_BASE = 10**9
MAX_KIND_WEIGHT = 1_000

MAX_NODES = 100_000
MAX_JOB_GPUS = 100_000  # one trace job, a gang of many pods: the largest run on about as many
MAX_PODS = 1_000_000
MAX_SECONDS = 10**9  # about 31 years: any duration or point in time
MAX_TIME_LIMIT_SECONDS = 86_400.0  # one planning cycle: a day
MAX_SOLVER_WORKERS = 1_024
MAX_SEED = 2**31 - 1  # CP-SAT's random_seed is an int32
MAX_COUNT = 10**9  # XIDs, counters and thresholds

# Documents.
MAX_DEPTH = 64  # nesting of mappings and lists; the formats need fewer than 10
MAX_DOCUMENT_BYTES = 512 * 2**20

# The objective's sum over every pod, kept well inside int64 (2^63).
MAX_TOTAL_VALUE = 2**61
