"""The controller: job state, scheduling, and the gRPC services clients and workers call."""
