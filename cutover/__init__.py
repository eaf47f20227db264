"""The release window: gates (snapshot done, no open dead letters, a fence applied on
every partition, verification clean), verification of green against transform(blue),
the switch of reads and its rollback, the read router client, and `bluegreen status`.
State is read and written through ``bluegreen.control``."""
