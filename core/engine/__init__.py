"""The engine core, free of I/O: planning requests (`plan`), reading answers (`decode`),
and deciding what a failed attempt means (`attempts`). Drivers (sync, async, Batch API,
dry run) do the I/O and share all of this."""
