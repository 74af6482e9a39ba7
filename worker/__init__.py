"""Celery adapter: claims job rows, runs kdcore.run, writes progress, metrics and artifacts back."""
