"""Outbound notifications of run events (Discord, Slack, signed webhooks, e-mail) and
commit statuses, with a delivery log and retries."""
