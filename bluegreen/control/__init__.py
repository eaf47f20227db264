"""The control layer: the migration's state in the control database (phase, snapshot
tasks, router record, audit trail, verification results), read and written here only."""
