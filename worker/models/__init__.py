"""Model watching: the serving model (``models/CURRENT``) loaded, checked and hot-reloaded."""
