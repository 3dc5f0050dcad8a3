"""Click commands, one module per stage of the pipeline."""
