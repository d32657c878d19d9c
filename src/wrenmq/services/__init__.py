"""Services around the broker: each plugs in through hooks and the broker's public methods, with
its own API routes (see STYLE.md)."""
