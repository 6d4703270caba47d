"""D-Bus adapters: thin, typed at their edges."""
