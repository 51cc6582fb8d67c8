"""Execution: the pool interface the queue schedules onto, the typed worker messages and run
outcomes, and the local worker processes implementing the pool."""
