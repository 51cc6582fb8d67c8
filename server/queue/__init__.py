"""The queue: submission, the SQLite store, scheduling of prompts onto an execution pool, webhooks."""
