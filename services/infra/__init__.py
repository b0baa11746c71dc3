"""Building blocks every service uses: databases, outbox, retries, dead letters,
background loops, RPC with a deadline, topology, pagination, logs, settings."""
