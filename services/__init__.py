"""mensageria's Nameko services: students, status and their shared building blocks."""
