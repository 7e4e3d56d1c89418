"""What a job run leaves behind: staged outputs, published run folders, stage timings, its summary."""
