"""Live avatars: the clock-paced engine that steps many sessions together, and its server."""
