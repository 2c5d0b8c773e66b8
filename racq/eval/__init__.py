"""Offline evaluation of the stages (`racq eval`): the run (run), its generation (gen), statistics
(significance: CIs, paired tests) and the report (report)."""
