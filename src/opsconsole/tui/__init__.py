"""The Textual console (run it with `opsconsole` or `opsconsole console`)."""
