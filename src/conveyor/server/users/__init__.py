"""Local users, API tokens, sessions, project roles and the one authorization rule."""
