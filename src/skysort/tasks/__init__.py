"""Target kinds (single-label, binary, multi-label, vote fractions), the decision-tree
schema of vote fractions and its output layer, and each kind's loss.

A :class:`~skysort.tasks.kinds.Task` owns everything that depends on the kind of target:
how many outputs, which output layer, which loss and class weights, how an output is read
as a class. The rest of skysort asks the task instead of testing its kind.
"""

from skysort.tasks.kinds import (
    SINGLE_LABEL_KINDS,
    TASK_KINDS,
    BinaryTask,
    FractionsTask,
    MultiLabelTask,
    Task,
    check_balance,
    make_task,
    task_from_dict,
)
from skysort.tasks.schema import TreeSchema, galaxy_zoo_schema, load_schema

__all__ = ["SINGLE_LABEL_KINDS", "TASK_KINDS", "BinaryTask", "FractionsTask", "MultiLabelTask",
           "Task", "TreeSchema", "check_balance", "galaxy_zoo_schema", "load_schema", "make_task",
           "task_from_dict"]
