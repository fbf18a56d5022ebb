"""What every layer stands on and that imports nothing of Ferry's: errors, clock, database, jobs."""
