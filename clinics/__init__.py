"""The clinic's world: tenancy, the event log, records, consults."""
