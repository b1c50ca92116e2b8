"""From runs to numbers: measures, metrics records, tables, suites and the reproduction runner."""
