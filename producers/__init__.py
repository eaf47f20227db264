"""The producers: everything blue commits, into the change topic.

Two sources share one envelope and one writer (``writer.KafkaWriter``, the only
place a producer touches Kafka): ``snapshot`` reads blue's existing rows in
resumable tasks, ``cdc`` streams every committed change from the logical
replication slot that ``blue_setup`` creates before the snapshot starts. A
source position is confirmed only after the broker acknowledged what precedes it.
While writes are on green, ``reverse`` captures green's changes into the reverse
topic with the same machinery.
"""
