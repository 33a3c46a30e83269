"""Figures and reports a user looks at: the HTML run report, markdown tables and the reports of
pruning runs."""
