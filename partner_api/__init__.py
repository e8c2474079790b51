"""Partner API: PSPs and B2B brands ask the status of their transactions over ``/v1``."""
