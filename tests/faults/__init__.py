"""The fault-injection suite (``make faults``): see conftest.py and faultkit.py."""
