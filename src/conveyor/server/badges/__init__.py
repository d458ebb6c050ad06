"""Status badges for READMEs."""
