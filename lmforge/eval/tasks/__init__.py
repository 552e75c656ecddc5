"""Evaluation tasks: the built-in benchmarks and user tasks from YAML."""

from lmforge.eval.tasks.base import Task
from lmforge.eval.tasks.builtin import TASK_NAMES, get_tasks

__all__ = ["Task", "TASK_NAMES", "get_tasks"]
