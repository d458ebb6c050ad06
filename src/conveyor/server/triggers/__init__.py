"""Triggers the server starts by itself: polling repositories and cron schedules."""
