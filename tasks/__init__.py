"""evaluate.py's tasks: the shared ones (predict, calibrate, compare, summarize) here, a family's in its subpackage.

Each task is a function ``fn(cfg) -> dict`` named by a file conf/task/<name>.yaml (``task._target_``).
"""
