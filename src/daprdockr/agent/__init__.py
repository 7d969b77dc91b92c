"""The agent: supervised tasks wiring the pure core to the adapters."""
