"""Project secrets: encrypted at rest, listed by name only, decrypted for job specs."""
