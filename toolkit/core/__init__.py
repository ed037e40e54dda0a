"""Pure decisions, no I/O: facts, the plan and its refusals, layouts, progress."""
