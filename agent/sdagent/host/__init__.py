"""Host facts: what this machine is (topology), what it has (libraries, launchers, IPEX),
and what a process on it really runs with. Read at the edges; records in, no rules."""
