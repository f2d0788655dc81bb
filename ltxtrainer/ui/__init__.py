"""The Gradio GUI: one module per tab, the strings table, the job runner and remembered settings.

The GUI never trains or loads a model in its own process: it builds configs and command lines
and runs the stage scripts as subprocesses through `jobs.JobRunner`. Importing this package does
not import gradio; only `app` and the `tab_*` modules do.
"""
