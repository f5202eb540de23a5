"""Reports: comparison tables, timelines, Perfetto traces, the HTML report."""
