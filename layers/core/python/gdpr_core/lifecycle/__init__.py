"""Data lifecycle: erase a site's data when the app is uninstalled from it (`uninstall`), and purge
cached copies older than their store's `maxAgeDays` (`retention`). Both act through the
personal-data map and keep the registry in step (see docs/lifecycle.md)."""
