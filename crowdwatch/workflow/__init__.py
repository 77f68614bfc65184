"""Alert handling: acknowledgement, escalation, notes, measures, sign-off, drills."""
