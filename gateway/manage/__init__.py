"""Remote management (SPEC §7): health to the city, signed config and commands
from it (agent.py on the gateway), the city's fleet tool (fleet.py), and
software updates with rollback (update.py)."""
