"""The master process: listeners, privileges, supervision of workers."""
