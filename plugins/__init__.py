"""The built-in components. Each module or package here with a ``register_components`` hook
is registered as a plugin, exactly as a third-party plugin would be."""
