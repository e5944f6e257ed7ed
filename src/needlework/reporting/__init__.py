"""Stage 4: reports (tables, plots) built from run folders."""
