"""Target kinds (single-label, binary, multi-label, vote fractions, vote counts), the decision-tree
schema of vote fractions and its output layer, and each kind's loss, metrics and
calibration.

A :class:`~skysort.tasks.base.Task` owns everything that depends on the kind of target:
how its targets are read, how many outputs, which output layer, which loss and class
weights, how an output is read as a class, its metrics beside their baseline, its
calibration, the report's sections and the prediction columns. The rest of skysort asks
the task instead of testing its kind. Importing this package registers the built-in kinds.
"""

from skysort.tasks.base import (
    ParsedTargets,
    Task,
    check_balance,
    make_task,
    register_task,
    single_label_kinds,
    task_class,
    task_from_dict,
    task_kinds,
)
from skysort.tasks.binary import BinaryTask
from skysort.tasks.calibration import Calibration
from skysort.tasks.counts import CountsTask
from skysort.tasks.detect import classes_kind, table_kind
from skysort.tasks.fractions import FractionsTask
from skysort.tasks.multiclass import MulticlassTask
from skysort.tasks.multilabel import MultiLabelTask
from skysort.tasks.schema import TreeSchema, galaxy_zoo_schema, load_schema

__all__ = ["BinaryTask", "Calibration", "CountsTask", "FractionsTask", "MultiLabelTask",
           "MulticlassTask", "ParsedTargets", "Task", "TreeSchema", "check_balance", "classes_kind",
           "galaxy_zoo_schema", "load_schema", "make_task", "register_task",
           "single_label_kinds", "table_kind", "task_class", "task_from_dict", "task_kinds"]
