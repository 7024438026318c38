"""frozen4d task plugin: importing this package registers the ``object_count`` task (and its
hydra config node); frozen4d imports it through the ``frozen4d.tasks`` entry point."""
from frozen4d_object_count.task import ObjectCount, count_metrics, object_counts

__all__ = ["ObjectCount", "count_metrics", "object_counts"]
