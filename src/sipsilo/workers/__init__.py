"""Several worker processes behind one supervisor (``[server] workers`` > 1)."""
