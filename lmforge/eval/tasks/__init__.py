"""Evaluation tasks: the built-in benchmarks and user tasks from YAML."""

from lmforge.eval.tasks.base import Task
from lmforge.eval.tasks.builtin import TASK_NAMES, get_tasks

__all__ = ["TASK_NAMES", "Task", "get_tasks"]
