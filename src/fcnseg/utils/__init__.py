"""Small shared helpers: atomic file output, devices, seeding."""
