"""One module per pipeline: each takes a model, tasks and settings and returns a PipelineOutput."""
