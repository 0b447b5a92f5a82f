"""analysis: label alignment, recovery scores, ArviZ conversion, figures and the report command."""
