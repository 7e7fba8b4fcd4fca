"""``llnbench report``: read run directories (never re-run), write one Markdown report."""
