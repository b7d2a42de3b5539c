"""Wire formats: SSE framing, the two dialects' shapes and probes, usage and cost."""
