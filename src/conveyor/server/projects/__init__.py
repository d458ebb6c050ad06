"""Projects: a git repository, how its runs are triggered, and who may do what in it."""
