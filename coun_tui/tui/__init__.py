"""The Textual lab: set up a forget request, run it in the background, watch it live, replay it later.

Only this package imports textual; `coun_tui.engine` stays headless (see tests/test_tui_boundary.py).
"""
