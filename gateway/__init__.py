"""mensageria's HTTP gateway: JSON over HTTP in front of the Nameko services."""
