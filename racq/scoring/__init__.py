"""Automatic scoring of a clarifying question: its options (options), whether the passages support
them (faithfulness, calibration), whether they name the query's interpretations (usefulness), and the
text metrics against a gold question (metrics)."""
