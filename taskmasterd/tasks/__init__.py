"""One-shot tasks and activities (SPEC §7, docs/tasks.md).

Pure core: `spec` (what a task is, the one input checker), `records` (the
status files' contents and format). The rest is documented in each module.
"""
