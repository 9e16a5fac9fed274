"""Settings per environment. ``create_app`` loads ``config.settings.Config`` and then every
``FLASK_*`` environment variable (``app.config.from_prefixed_env``)."""
