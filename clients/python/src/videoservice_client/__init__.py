"""Python client of the self-hosted video generation service (see client.py for an example)."""
from . import messages
from .client import Client, Job, JobFailed, LiveSession, VideoServiceError, decode

__all__ = ["Client", "Job", "JobFailed", "LiveSession", "VideoServiceError", "decode", "messages"]
